"""The line under the prompt: live tokens/s, time to first token, context used/limit, and how
many drafted tokens the last turn accepted (speculative decoding)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.widget import Widget

from localr1.durations import format_seconds
from localr1.tui.formatting import count


@dataclass(frozen=True)
class StatusFacts:
    state: str  # "ready", "generating", "thinking", "loading model", "no model"
    tokens_per_second: float | None = None
    ttft_seconds: float | None = None
    context_used: int | None = None
    context_limit: int | None = None
    generated: int | None = None
    draft_acceptance: float | None = None  # the finished turn's, when it drafted


class StatusLine(Widget):
    """One line of fixed height: updates repaint it without a layout pass (which would
    re-arrange the whole screen several times a second while a reply streams)."""

    DEFAULT_CSS = """
    StatusLine { height: 1; padding: 0 1; color: $text-muted; background: $panel; }
    StatusLine.-busy { color: $text-accent; }
    """

    def __init__(self, *, show_timings: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.show_timings = show_timings
        self.facts = StatusFacts("ready")
        self._content = Content("ready")

    def render(self) -> Content:
        return self._content

    def show(self, facts: StatusFacts) -> None:
        if facts == self.facts and self.is_mounted:
            return
        self.facts = facts
        parts = [facts.state]
        if facts.generated:
            parts.append(f"{count(facts.generated)} tokens")
        if self.show_timings:
            if facts.tokens_per_second:
                parts.append(f"{facts.tokens_per_second:.1f} tok/s")
            if facts.ttft_seconds is not None:
                parts.append(f"TTFT {format_seconds(facts.ttft_seconds)}")
        if facts.draft_acceptance is not None:
            parts.append(f"draft {facts.draft_acceptance:.0%} accepted")
        if facts.context_limit:
            used = count(facts.context_used) if facts.context_used is not None else "–"
            parts.append(f"context {used}/{count(facts.context_limit)}")
        self.set_class(facts.state in ("generating", "thinking", "loading model"), "-busy")
        self._content = Content(" · ".join(parts))
        self.refresh()
