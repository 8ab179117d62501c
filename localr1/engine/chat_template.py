"""Render a GGUF's Jinja chat template in a sandbox with a budget, failing in one line.

A chat template is code from the model file. Like llama-cpp-python's Jinja2ChatFormatter we
use Jinja's immutable sandbox with the Transformers extensions (``{% generation %}``,
``break``/``continue``, a ``tojson`` that keeps non-ASCII), but a template must not hang the
app either: every ``for`` loop's iterable is wrapped (in the parsed template, before it is
compiled) so that each iteration spends a step, as do every call and every piece of output, and
the render stops at a step budget or a deadline. A syntax error is reported when the template is
compiled.
"""

from __future__ import annotations

import contextvars
import json
import operator
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localr1.errors import ChatFormatError

MAX_STEPS = 1_000_000  # loop iterations, calls and output pieces per render
MAX_SECONDS = 5.0
MAX_SEQUENCE = 1_000_000  # longest list or string `*` may build


class TemplateBudgetExceeded(Exception):
    """The template ran past its step budget or its deadline."""


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


class _BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def __init__(self) -> None:
        super().__init__(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
                         extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols])
        self.filters["tojson"] = _tojson

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _budget.get().step()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) \
                        and len(seq) * times > MAX_SEQUENCE:
                    raise TemplateBudgetExceeded
            return operator.mul(left, right)
        if isinstance(right, int) and abs(right) > 1000 and not isinstance(left, float):
            raise TemplateBudgetExceeded  # huge integer powers take unbounded time
        return operator.pow(left, right)


class ChatTemplate:
    """A compiled chat template; `render` raises ChatFormatError with a one-line message."""

    def __init__(self, source: str, *, steps: int = MAX_STEPS,
                 seconds: float = MAX_SECONDS) -> None:
        self._env = _BudgetedEnvironment()
        self._steps, self._seconds = steps, seconds
        try:
            tree = self._env.parse(source)
            for loop in tree.find_all(nodes.For):
                loop.iter = nodes.Call(nodes.Name(_COUNTED, "load"), [loop.iter], [], None, None)
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
                                                 **{_COUNTED: _counted}, **variables):
                budget.step()
                pieces.append(piece)
        except TemplateBudgetExceeded:
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
