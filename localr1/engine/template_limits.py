"""Size limits for what a chat template builds: strings, lists and integers stay small.

The chat template sandbox (engine/chat_template.py) counts steps, but one step can still build
a gigabyte (`"a"|center(10**9)`, `"%1000000000s" % x`, `s ~ s` ten times) or an integer that
takes minutes to compute (`(9**1000)**1000`). These checks refuse such an operation before it
runs where its size is known up front, and refuse its result after it ran otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MAX_SEQUENCE = 1_000_000  # longest string, list or dict a template may build
MAX_INT_BITS = 100_000  # largest integer `*` and `**` may build
MAX_POW_BASE_BITS = 64  # `**` on a bigger integer is how chained powers explode


class TemplateBudgetExceeded(Exception):
    """The template ran past its step budget, its deadline or a size limit."""


# A width or precision in a %-format or a {}-format spec: `%1000000000s`, `{:>1000000000}`.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")
_NUMBER = re.compile(r"\d+")


def check_size(value: Any) -> Any:
    """`value`, unless it is a string, list, tuple or dict over MAX_SEQUENCE items."""
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_SEQUENCE:
        raise TemplateBudgetExceeded
    if isinstance(value, int) and not isinstance(value, bool) \
            and value.bit_length() > MAX_INT_BITS:
        raise TemplateBudgetExceeded
    return value


def binop(operator_name: str, left: Any, right: Any) -> None:
    """Refuse `left <op> right` when its result would be too big to build."""
    if operator_name == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) \
                    and len(seq) * times > MAX_SEQUENCE:
                raise TemplateBudgetExceeded
        if _is_int(left) and _is_int(right) \
                and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateBudgetExceeded
    elif operator_name == "**":
        if not _is_int(right) or isinstance(left, float):
            return  # float powers overflow to an error, they do not grow
        if abs(right) > 1000 or (_is_int(left) and (
                left.bit_length() > MAX_POW_BASE_BITS
                or left.bit_length() * abs(right) > MAX_INT_BITS)):
            raise TemplateBudgetExceeded
    elif operator_name == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple) \
                and len(left) + len(right) > MAX_SEQUENCE:
            raise TemplateBudgetExceeded
    elif operator_name == "%" and isinstance(left, str):
        check_format_string(left, right if isinstance(right, tuple) else (right,))


def check_format_string(text: str, args: Iterable[Any] = ()) -> None:
    """Refuse a %-format or {}-format string whose widths would build a huge string."""
    star = False
    for match in _PERCENT_SPEC.finditer(text):
        for width in match.groups():
            if width == "*":
                star = True
            elif width and int(width) > MAX_SEQUENCE:
                raise TemplateBudgetExceeded
    if star and any(_is_int(arg) and abs(arg) > MAX_SEQUENCE for arg in args):
        raise TemplateBudgetExceeded
    for match in _BRACE_SPEC.finditer(text):
        if any(int(n) > MAX_SEQUENCE for n in _NUMBER.findall(match.group(1))):
            raise TemplateBudgetExceeded


def check_call(name: str, subject: Any, args: tuple, kwargs: dict) -> None:
    """Refuse a filter or method call (`name` on `subject`) whose result would be huge."""
    values = (*args, *kwargs.values())
    if any(_is_int(v) and abs(v) > MAX_SEQUENCE for v in values):
        raise TemplateBudgetExceeded  # a width, count or size: center, indent, expandtabs...
    if name in ("format", "format_map") and isinstance(subject, str):
        check_format_string(subject, values)
        nested = [v for arg in values if isinstance(arg, dict) for v in arg.values()]
        if any(_huge_width(v) for v in (*values, *nested)):  # `{:>{w}}`: a width argument
            raise TemplateBudgetExceeded
    elif name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str) and isinstance(new, str):
            hits = len(subject) + 1 if not old else subject.count(old)
            if len(subject) + hits * len(new) > MAX_SEQUENCE:
                raise TemplateBudgetExceeded
    elif name == "join":
        # str.join(items) has the separator as subject; the join filter has it as an argument
        separator, items = (subject, args[0] if args else ()) if isinstance(subject, str) \
            else (args[0] if args and isinstance(args[0], str) else "", subject)
        if isinstance(items, list | tuple) and len(separator) * len(items) > MAX_SEQUENCE:
            raise TemplateBudgetExceeded
    elif name == "indent" and isinstance(subject, str):
        width = args[0] if args else kwargs.get("width", 4)
        if isinstance(width, str) and \
                len(width) * (subject.count("\n") + 1) + len(subject) > MAX_SEQUENCE:
            raise TemplateBudgetExceeded


def concat(values: Iterable[Any]) -> str:
    """Jinja's `a ~ b`, refusing a result over MAX_SEQUENCE characters."""
    pieces = [str(value) for value in values]
    if sum(map(len, pieces)) > MAX_SEQUENCE:
        raise TemplateBudgetExceeded
    return "".join(pieces)


def counted_items(values: Iterator[Any], step: Callable[[], None]) -> Iterator[Any]:
    """A filter's lazy result (map, select, batch...): each item spends a step."""
    for value in values:
        step()
        yield value


def _huge_width(value: Any) -> bool:
    if isinstance(value, str):
        return value.isdigit() and int(value) > MAX_SEQUENCE
    return _is_int(value) and abs(value) > MAX_SEQUENCE


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
