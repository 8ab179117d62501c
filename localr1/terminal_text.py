"""Model text made safe for a terminal: control characters shown, never executed.

A model can emit ESC sequences (colour changes, cursor moves, OSC 8 links, even OSC 52
clipboard writes). On a terminal we show them as visible escapes instead: ESC becomes `\\x1b`.
Newlines and tabs stay as they are.
"""

from __future__ import annotations

import re

# C0 controls except \t and \n, DEL, and the C1 controls (U+0080-U+009F: e.g. U+009B is CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible_controls(text: str) -> str:
    """`text` with every terminal control character written as a visible `\\xNN` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
