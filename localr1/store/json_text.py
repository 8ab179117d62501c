"""JSON text that is safe to print and to save: valid, and free of raw control characters.

json.dumps(ensure_ascii=False) escapes C0 controls but writes DEL and the C1 controls
(U+0080-U+009F, U+009B is a terminal's CSI) as they are, and a lone surrogate could not be
written as UTF-8 at all; those become \\uXXXX escapes here. NaN and infinities, which would
make the text invalid JSON, become null.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_UNSAFE = re.compile(r"[\x7f-\x9f\ud800-\udfff]")


def json_text(data: Any, *, indent: int | None = 2) -> str:
    text = json.dumps(_finite(data), indent=indent, ensure_ascii=False, allow_nan=False)
    # Outside strings JSON has only ASCII punctuation, so every match is inside a string.
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
