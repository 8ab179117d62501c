"""A conversation's params: its sampling settings in typed columns (migration m002), the rest
(load settings, batch ids) as a JSON object in the `params` column.

Callers see one dict (`Conversation.params`). Values are checked on the way in, so a stored
conversation can always be run again and always prints as valid JSON; on the way out,
anything odd an older version left (NaN, a wrong type) is dropped rather than shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from localr1.store.errors import StoreError

_INT64 = (-(2**63), 2**63 - 1)
# name: (type, lowest, highest, lowest excluded, highest excluded); as `localr1 run` allows.
SAMPLING: dict[str, tuple[type, float, float, bool, bool]] = {
    "temperature": (float, 0.0, 5.0, False, False),
    "top_p": (float, 0.0, 1.0, True, False),
    "top_k": (int, 0, _INT64[1], False, False),
    "min_p": (float, 0.0, 1.0, False, True),
    "max_tokens": (int, 0, _INT64[1], False, False),
    "seed": (int, *_INT64, False, False),
    "reasoning_budget": (int, -1, _INT64[1], False, False),
}
MAX_JSON_DEPTH = 16


def sampling_value(name: str, value: Any) -> int | float | None:
    """`value` as a valid `name` setting, or None when it is not one."""
    kind, low, high, low_open, high_open = SAMPLING[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int and not isinstance(value, int):
        return None
    # isfinite only for floats: it raises OverflowError for an int past a float's range.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < low or value > high:
        return None
    if (low_open and value == low) or (high_open and value == high):
        return None
    return kind(value)


def turn_sampling(stored: Mapping[str, Any],
                  chosen: Mapping[str, Any]) -> dict[str, int | float | None]:
    """The sampling settings of a conversation's next turn, for `GenerationParams.from_settings`:
    each one as `chosen` for this turn (a flag typed, an F4 field; None = not chosen), else as
    the conversation stored it (`Conversation.params`), else None: the config's."""
    values: dict[str, int | float | None] = {}
    for name in SAMPLING:
        value = chosen.get(name)
        values[name] = value if value is not None else stored.get(name)
    return values


def split_params(params: dict[str, Any]) -> tuple[dict[str, int | float | None], str]:
    """(the sampling columns, the other params as JSON text); StoreError when invalid."""
    if not isinstance(params, dict):
        raise StoreError("params must be an object")
    sampling: dict[str, int | float | None] = dict.fromkeys(SAMPLING)
    rest: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise StoreError("params names must be strings")
        if key in SAMPLING:
            if value is not None:
                sampling[key] = sampling_value(key, value)
                if sampling[key] is None:
                    raise StoreError(f"params: {key} cannot be {shown(value)}")
        elif not _plain_json(value, MAX_JSON_DEPTH):
            raise StoreError(f"params: {shown(key)} is not a plain JSON value (finite numbers, "
                             f"64-bit integers, text, at most {MAX_JSON_DEPTH} levels deep)")
        else:
            rest[key] = value
    return sampling, json.dumps(rest, ensure_ascii=False, allow_nan=False)


def merged_params(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation row's params: the JSON object plus the sampling columns that are set."""
    try:
        rest = json.loads(row.get("params") or "{}")  # NaN, Infinity: dropped below
    except (ValueError, RecursionError):
        rest = {}
    if not isinstance(rest, dict):
        rest = {}
    params = {key: value for key, value in rest.items() if _plain_json(value, MAX_JSON_DEPTH)}
    for name in SAMPLING:
        if name in row:  # a database read before m002 (read-only) keeps them in the JSON
            params.pop(name, None)
            value = sampling_value(name, row[name]) if row[name] is not None else None
            if value is not None:
                params[name] = value
        elif name in params and sampling_value(name, params[name]) is None:
            del params[name]
    return params


def _plain_json(value: Any, depth: int) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return is_valid_text(value)
    if depth <= 0:
        return False
    if isinstance(value, list):
        return all(_plain_json(item, depth - 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_valid_text(k) and _plain_json(v, depth - 1)
                   for k, v in value.items())
    return False


def is_valid_text(text: str) -> bool:
    """False for text SQLite cannot store as UTF-8 (lone surrogates such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: Any) -> str:
    """`value` for an error line: short, escaped, and safe for integers too long to print."""
    if isinstance(value, int) and value.bit_length() > 63:
        return "an integer past 64 bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
