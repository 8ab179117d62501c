"""Render a GGUF's Jinja chat template in a sandbox with a budget, failing in one line.

A chat template is code from the model file. Like llama-cpp-python's Jinja2ChatFormatter we
use Jinja's immutable sandbox with the Transformers extensions (``{% generation %}``,
``break``/``continue``, a ``tojson`` that keeps non-ASCII), but a template must not hang the
app either: every ``for`` loop's iterable is wrapped (in the parsed template, before it is
compiled) so that each iteration spends a step, as do every call, every filter and every piece
of output, and the render stops at a step budget or a deadline. What one step may build is
capped too (engine/template_limits.py): `*`, `**`, `+`, `%`, `~`, filters and string methods.
Globals that chat templates do not use (lipsum, cycler, joiner) are gone. A syntax error is
reported when the template is compiled.
"""

from __future__ import annotations

import contextvars
import functools
import json
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from localr1.engine import template_limits
from localr1.engine.template_limits import TemplateBudgetExceeded
from localr1.errors import ChatFormatError

MAX_STEPS = 1_000_000  # loop iterations, calls and output pieces per render
MAX_SECONDS = 5.0
_UNUSED_GLOBALS = ("lipsum", "cycler", "joiner")  # lipsum alone builds gigabytes in one call


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Hugging Face's ``{% generation %}`` chat-template tag."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Budget:
    def __init__(self, steps: int, seconds: float) -> None:
        self.steps_left = steps
        self.deadline = time.monotonic() + seconds

    def step(self) -> None:
        self.steps_left -= 1
        # The clock is read every 1024 steps: cheap, and still well inside the deadline.
        if self.steps_left < 0 or (self.steps_left & 1023 == 0
                                    and time.monotonic() > self.deadline):
            raise TemplateBudgetExceeded


_BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self) -> None:
        super().__init__(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
                         extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols])
        self.filters["tojson"] = _tojson
        self.filters = {name: _budgeted_filter(name, function)
                        for name, function in self.filters.items()}
        for name in _UNUSED_GLOBALS:
            del self.globals[name]

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _budget.get().step()
        subject = getattr(__obj, "__self__", None)  # a string or list method: its size limits
        if isinstance(subject, str | list | tuple | dict):
            template_limits.check_call(getattr(__obj, "__name__", ""), subject, args, kwargs)
        return template_limits.check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja wraps str.format when it is looked up, so call() never sees the string.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def checked(*args: Any, **kwargs: Any) -> str:
            template_limits.check_call(value.__name__, value.__self__, args, kwargs)
            return template_limits.check_size(wrapped(*args, **kwargs))

        return checked

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        template_limits.binop(operator_name, left, right)
        return template_limits.check_size(_BINOPS[operator_name](left, right))


def _budgeted_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` spending a step, refusing huge arguments and capping its result."""
    # A filter may take the context, eval context or environment before its value.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)  # keeps jinja_pass_arg
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        budget.step()
        if len(args) > skip:
            template_limits.check_call(name, args[skip], args[skip + 1:], kwargs)
        result = function(*args, **kwargs)
        if isinstance(result, Iterator):  # map, select, batch...: each item is a step
            return template_limits.counted_items(result, budget.step)
        return template_limits.check_size(result)

    return budgeted


class _Instrumented(NodeTransformer):
    """Every for loop's iterable goes through _counted, every `a ~ b` through _concat."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_COUNTED, node.iter, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_CONCAT, nodes.List(node.nodes, lineno=node.lineno), node.lineno)


def _call(name: str, argument: nodes.Expr, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), [argument], [], None, None,
                      lineno=lineno)


class ChatTemplate:
    """A compiled chat template; `render` raises ChatFormatError with a one-line message."""

    def __init__(self, source: str, *, steps: int = MAX_STEPS,
                 seconds: float = MAX_SECONDS) -> None:
        self._env = _BudgetedEnvironment()
        self._steps, self._seconds = steps, seconds
        try:
            tree = _Instrumented().visit(self._env.parse(source))
            self._template = self._env.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatFormatError(
                f"the chat template has a syntax error: {_one_line(exc.message or '')} "
                f"(line {exc.lineno}); try --chat-format NAME") from None
        except RecursionError:
            raise ChatFormatError("the chat template is nested too deeply to compile; "
                                  "try --chat-format NAME") from None

    def render(self, **variables: Any) -> str:
        budget = _Budget(self._steps, self._seconds)  # per call: renders may run concurrently
        token = _budget.set(budget)
        pieces = []
        try:
            for piece in self._template.generate(raise_exception=_raise_exception,
                                                 strftime_now=_strftime_now,
                                                 **{_COUNTED: _counted,
                                                    _CONCAT: template_limits.concat},
                                                 **variables):
                budget.step()
                pieces.append(piece)
        except (TemplateBudgetExceeded, MemoryError):
            raise ChatFormatError(
                f"the chat template did not finish within its budget ({self._steps:,} steps, "
                f"{self._seconds:g} s); try --chat-format NAME") from None
        except Exception as exc:  # template bugs surface as jinja2 errors, ValueError, ...
            raise ChatFormatError(f"the chat template failed: {_one_line(str(exc))}; "
                                  "try --chat-format NAME") from None
        finally:
            _budget.reset(token)
        return "".join(pieces)


_COUNTED = "__localr1_counted__"  # the name the rewritten for loops call
_CONCAT = "__localr1_concat__"  # the name the rewritten `~` calls
_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("chat_template_budget")


def _counted(values: Iterable[Any]) -> Iterator[Any]:
    budget = _budget.get()
    for value in values:
        budget.step()
        yield value


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def check_gguf_templates(metadata: dict[str, Any]) -> None:
    """Compile every chat template a GGUF carries; a syntax error is a one-line ChatFormatError.

    llama-cpp-python compiles them all (``tokenizer.chat_template`` and the named
    ``tokenizer.chat_template.*``) while constructing ``Llama``, and a syntax error would escape
    from there as a traceback, so they are checked before the load.
    """
    for key, value in metadata.items():
        if key.startswith("tokenizer.chat_template") and isinstance(value, str):
            try:
                ChatTemplate(value)
            except ChatFormatError as exc:
                if key == "tokenizer.chat_template":
                    raise
                raise ChatFormatError(f"{key}: {exc}") from None
