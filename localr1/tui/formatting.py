"""Text the TUI shows, built without markup: model and user text stays literal.

Everything that may hold model or user text (titles, snippets, errors) goes through `literal`:
control characters become visible `\\x1b`-style escapes and the result is a `Content` whose
square brackets are just characters, never Rich/Textual markup.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from textual.content import Content

from localr1.durations import format_seconds
from localr1.terminal_text import visible_controls


def literal(text: str, style: str = "") -> Content:
    """`text` shown as is: no markup, control characters written as visible escapes."""
    return Content.styled(visible_controls(text), style) if style else \
        Content(visible_controls(text))


def one_line(text: str) -> str:
    return " ".join(text.split())


def day_group(updated_at: str, today: date | None = None) -> str:
    """'Today', 'Yesterday' or 'Older' for an ISO-8601 UTC time, in local time."""
    today = today or date.today()
    try:
        stamp = datetime.fromisoformat(updated_at)
    except ValueError:
        return "Older"
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    day = stamp.astimezone().date()
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    return "Older"


def thinking_label(elapsed: float | None) -> str:
    """The reasoning block's title while the model thinks (whole seconds, ticking)."""
    return "Thinking…" if elapsed is None else f"Thinking… {int(elapsed)} s"


def thought_label(thinking_seconds: float | None, *, truncated: bool = False,
                  finish_reason: str | None = None, show_time: bool = True) -> str:
    """The reasoning block's title once thinking is over: 'Thought for 12.3 s' and why it ended
    early, if it did. No square brackets: Collapsible titles are parsed as markup."""
    text = "Thought" if thinking_seconds is None or not show_time \
        else f"Thought for {format_seconds(thinking_seconds)}"
    if truncated:
        reason = {"cancelled": "stopped while thinking",
                  "length": "cut off: out of tokens",
                  "repetition": "stopped: it kept repeating itself",
                  "incomplete": "interrupted",
                  "error": "ended by an error"}.get(finish_reason or "", "unfinished")
        text += f" ({reason})"
    return text


def count(n: int) -> str:
    return f"{n:,}"
