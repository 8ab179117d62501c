"""The one way text reaches the terminal: control characters shown, never executed.

Model answers, file names, GGUF metadata, Hub file names and stored titles can all hold ESC
sequences (colour changes, cursor moves, OSC 8 links, OSC 52 clipboard writes, `ESC c` reset).
On a terminal we show them as visible escapes instead: ESC becomes `\\x1b`. Newlines and tabs
stay as they are. Pipes and files get the text as it is, so scripts see the real bytes
(click.echo, underneath, still drops colour codes there, as it always has).

Every human-readable line the CLI prints goes through `safe_echo` (or `safe_write` for code that
writes to a stream it was given); styling is applied after escaping, so only our own escape
codes reach the terminal.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

import click

# C0 controls except \t and \n, DEL, and the C1 controls (U+0080-U+009F: e.g. U+009B is CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible_controls(text: str) -> str:
    """`text` with every terminal control character written as a visible `\\xNN` escape."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stream-like object without a fd
        return False


def for_stream(text: str, stream: TextIO) -> str:
    """`text` as it may be written to `stream`: controls made visible on a terminal."""
    return visible_controls(text) if is_terminal(stream) else text


def safe_write(stream: TextIO, text: str) -> None:
    """Write `text` to `stream` (controls made visible on a terminal) and flush."""
    stream.write(for_stream(text, stream))
    stream.flush()


def safe_echo(message: Any = "", *, err: bool = False, nl: bool = True, **style: Any) -> None:
    """click.echo for human text: controls made visible on a terminal, then `style`
    (click.style's keywords: bold, dim, fg...) applied, which click drops off a terminal."""
    stream = sys.stderr if err else sys.stdout
    text = for_stream(str(message), stream)
    click.echo(click.style(text, **style) if style else text, err=err, nl=nl)


def safe_confirm(question: str, *, err: bool = False) -> None:
    """click.confirm(abort=True) whose question may hold data (a model's name or path)."""
    stream = sys.stderr if err else sys.stdout
    click.confirm(for_stream(question, stream), abort=True, err=err)
