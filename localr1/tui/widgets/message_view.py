"""One chat message on screen: the user's text, or an answer with its reasoning above it.

An answer's reasoning sits in a `Collapsible`: open while the model thinks ("Thinking… 8 s"),
collapsed to "Thought for 12.3 s" as soon as the answer starts (unless the user keeps it
open). Both the reasoning and the answer are `StreamingMarkdown`, so a long think block costs
no more per token than a long answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Collapsible, Static

from localr1.durations import format_seconds
from localr1.store import Message
from localr1.tui.formatting import literal, thinking_label, thought_label
from localr1.tui.widgets.streaming_markdown import StreamingMarkdown

if TYPE_CHECKING:
    from localr1.engine.events import TurnStats


REPETITION_NOTE = "↻ stopped: the model kept repeating itself"
STILL_WRITING_NOTE = "… still being written elsewhere…"
# An answer stored as 'incomplete' (its writer has not finished it) that began this recently is
# taken for one another program (`localr1 run --cid N`) is still writing; an older one was cut
# off by a program that closed mid-answer.
STILL_WRITING_SECONDS = 600


@dataclass(frozen=True)
class Versions:
    """This message is version `index` (1-based) of `total` siblings (regenerations, edits)."""

    index: int
    total: int


def display_model_name(label: str | None) -> str:
    """A model label as a short name: history stores a library name or a file path."""
    if not label:
        return "Assistant"
    name = label.replace("\\", "/").rsplit("/", 1)[-1]
    return name.removesuffix(".gguf") or label


def being_written(message: Message, now: datetime | None = None) -> bool:
    """Whether `message`, an answer not finished in the store, is likely still being
    written (see STILL_WRITING_SECONDS)."""
    try:
        created = datetime.fromisoformat(message.created_at)
    except ValueError:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - created).total_seconds()
    return message.finish_reason == "incomplete" and age < STILL_WRITING_SECONDS


class ReasoningBlock(Collapsible):
    DEFAULT_CSS = """
    ReasoningBlock { background: $boost; border-top: none; padding: 0; margin: 0 0 1 0; }
    ReasoningBlock Contents { padding: 0 0 0 2; color: $text-muted; }
    ReasoningBlock CollapsibleTitle { color: $text-muted; }
    """

    def __init__(self, text: str = "", *, title: str, collapsed: bool) -> None:
        body = StreamingMarkdown(text, classes="reasoning-text")
        super().__init__(body, title=title, collapsed=collapsed)
        self.body = body

    def _watch_collapsed(self, collapsed: bool) -> None:
        # Collapsible scrolls itself into view on every toggle; while an answer streams that
        # would fight the chat log's anchor, so only update the state and tell listeners.
        self._update_collapsed(collapsed)
        self.post_message(self.Collapsed(self) if collapsed else self.Expanded(self))


class UserMessage(Vertical):
    DEFAULT_CSS = """
    UserMessage { height: auto; margin: 0 0 1 0; padding: 0 1; border-left: outer $primary; }
    UserMessage > .role { color: $primary; text-style: bold; }
    UserMessage > .body { height: auto; }
    """

    def __init__(self, text: str, message_id: int | None = None,
                 versions: Versions | None = None) -> None:
        super().__init__()
        self.text = text
        self.message_id = message_id
        self.versions = versions

    def compose(self) -> ComposeResult:
        yield Static(self._role_line(), classes="role")
        yield Static(literal(self.text), classes="body")

    def _role_line(self) -> Content:
        parts: list[str | tuple[str, str]] = ["You"]
        if self.versions and self.versions.total > 1:
            parts.append((f"  ‹ {self.versions.index}/{self.versions.total} ›  alt+↑/↓",
                          "dim"))
        return Content.assemble(*parts)

    def set_versions(self, versions: Versions | None) -> None:
        self.versions = versions
        if self.is_mounted:
            self.query_one(".role", Static).update(self._role_line())


class AssistantMessage(Vertical):
    """An answer: finished (from the store) or streaming (fed by the chat screen's timer)."""

    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 0 0 1 0; padding: 0 1; border-left: outer $accent; }
    AssistantMessage > .role { color: $accent; text-style: bold; }
    AssistantMessage > .footer { color: $text-muted; height: auto; }
    AssistantMessage > .footer.-warn { color: $text-warning; }
    """

    def __init__(self, *, model_label: str | None, message: Message | None = None,
                 versions: Versions | None = None, keep_reasoning_open: bool = False,
                 show_timings: bool = True, expect_reasoning: bool = False,
                 error: str | None = None) -> None:
        super().__init__()
        self.model_label = model_label
        self.message_id = message.id if message else None
        self.versions = versions
        self.keep_reasoning_open = keep_reasoning_open
        self.show_timings = show_timings
        self.streaming = message is None
        self.finish_reason: str | None = message.finish_reason if message else None
        self.answer_text = message.content if message else ""
        self.reasoning_text = (message.reasoning or "") if message else ""
        self.error = error  # why the turn failed, in the app's words (see tui/turn_errors.py)
        self._stored = message
        self._stats: TurnStats | None = None
        self._thinking_started: float | None = None
        self._thinking_ended: float | None = None
        self.reasoning: ReasoningBlock | None = None
        self.answer = StreamingMarkdown(self.answer_text, classes="answer")
        self.footer = Static("", classes="footer")
        # Built before the first token (hidden) so that token costs the UI almost nothing:
        # early in a turn, UI work competes with the model for the CPU.
        self._spare_reasoning: ReasoningBlock | None = None
        if self.streaming and expect_reasoning:
            self._spare_reasoning = ReasoningBlock(
                title=thinking_label(0.0 if show_timings else None), collapsed=False)
            self._spare_reasoning.display = False
        self._footer_text: str | None = None

    # ---- building -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(literal(display_model_name(self.model_label)), classes="role")
        message = self._stored
        if message is not None and message.reasoning:
            truncated = not message.content.strip() and message.finish_reason != "stop"
            self.reasoning = ReasoningBlock(
                message.reasoning, collapsed=not self.keep_reasoning_open,
                title=thought_label(message.thinking_seconds, truncated=truncated,
                                    finish_reason=message.finish_reason,
                                    show_time=self.show_timings))
            yield self.reasoning
        if self._spare_reasoning is not None:
            yield self._spare_reasoning
        yield self.answer
        yield self.footer

    async def on_mount(self) -> None:
        self._update_footer()
        if self.streaming:
            await self.answer.prepare()
            if self._spare_reasoning is not None:
                await self._spare_reasoning.body.prepare()

    # ---- streaming (called by the chat screen's flush timer) ------------------------------

    async def add_reasoning(self, text: str, started_at: float | None) -> None:
        if self.reasoning is None:
            self._thinking_started = started_at or time.perf_counter()
            if self._spare_reasoning is not None:
                self.reasoning, self._spare_reasoning = self._spare_reasoning, None
                self.reasoning.display = True
            else:
                self.reasoning = ReasoningBlock(title=thinking_label(
                    0.0 if self.show_timings else None), collapsed=False)
                await self.mount(self.reasoning, before=self.answer)
            self._update_footer()
        self.reasoning_text += text
        await self.reasoning.body.write(text)

    async def add_answer(self, text: str, started_at: float | None) -> None:
        if self.reasoning is not None and self._thinking_ended is None:
            self._thinking_ended = started_at or time.perf_counter()
            self._show_thought()
            if not self.keep_reasoning_open:
                self.reasoning.collapsed = True
        self.answer_text += text
        await self.answer.write(text)
        self._update_footer()

    def tick(self, viewport_top: int | None = None, following: bool = False) -> None:
        """Advance the 'Thinking… N s' clock (whole seconds); tuck away pieces of the answer
        (and reasoning) that scrolled out of sight (see StreamingMarkdown.tuck)."""
        if viewport_top is not None:
            self.answer.tuck(viewport_top, following)
            if self.reasoning is not None:
                self.reasoning.body.tuck(viewport_top, following)
        if self.reasoning is None or self._thinking_ended is not None or not self.show_timings:
            return
        started = self._thinking_started or time.perf_counter()
        title = thinking_label(time.perf_counter() - started)
        if self.reasoning.title != title:
            self.reasoning.title = title

    async def finish(self, stats: TurnStats | None, stored: Message | None) -> None:
        """Generation is over: one full render, final labels, the stored message's id."""
        self.streaming = False
        self._stats = stats
        if stored is not None:
            self._stored = stored
            self.message_id = stored.id
            self.finish_reason = stored.finish_reason
            self.answer_text = stored.content
            self.reasoning_text = stored.reasoning or ""
        elif stats is not None:
            self.finish_reason = stats.finish_reason
        else:
            self.finish_reason = self.finish_reason or "error"
        if self._spare_reasoning is not None:  # it did not think
            await self._spare_reasoning.remove()
            self._spare_reasoning = None
        if self.reasoning is not None:
            await self.reasoning.body.finish(self.reasoning_text)
            if self._thinking_ended is None:
                self._thinking_ended = time.perf_counter()
            self._show_thought()
            if self.answer_text.strip() and not self.keep_reasoning_open:
                self.reasoning.collapsed = True
        await self.answer.finish(self.answer_text)
        self._update_footer()

    def _show_thought(self) -> None:
        assert self.reasoning is not None
        thinking = None
        if self._stats is not None and self._stats.thinking_seconds is not None:
            thinking = self._stats.thinking_seconds
        elif self._stored is not None and self._stored.thinking_seconds is not None:
            thinking = self._stored.thinking_seconds
        elif self._thinking_started is not None and self._thinking_ended is not None:
            thinking = self._thinking_ended - self._thinking_started
        truncated = not self.streaming and not self.answer_text.strip() \
            and self.finish_reason != "stop"
        self.reasoning.title = thought_label(thinking, truncated=truncated,
                                             finish_reason=self.finish_reason,
                                             show_time=self.show_timings)

    # ---- versions and footer ---------------------------------------------------------------

    def set_versions(self, versions: Versions | None) -> None:
        self.versions = versions
        self._update_footer()

    def _update_footer(self) -> None:
        parts: list[str] = []
        warn = False
        if self.streaming:
            if not self.answer_text and self.reasoning is None:
                parts.append("waiting for the first token…")
        else:
            reason = self.finish_reason
            if reason == "cancelled":
                parts.append("■ stopped")
                warn = True
            elif reason == "length":
                parts.append("✂ cut off: out of tokens or context")
                warn = True
            elif reason == "incomplete" and self._stored is not None \
                    and being_written(self._stored):
                parts.append(STILL_WRITING_NOTE)
            elif reason == "incomplete":
                parts.append("⚠ interrupted (the app closed mid-answer)")
                warn = True
            elif reason == "repetition":
                parts.append(REPETITION_NOTE)
                warn = True
            elif reason == "error":
                parts.append(f"⚠ {self.error}" if self.error else "⚠ ended by an error")
                warn = True
            if not self.answer_text.strip() and reason == "stop":
                parts.append("(empty answer)")
        if self.versions and self.versions.total > 1:
            parts.append(f"‹ {self.versions.index}/{self.versions.total} ›  alt+←/→")
        if not self.streaming and self.show_timings:
            rate = self._stats.tokens_per_second if self._stats else \
                (self._stored.tokens_per_second if self._stored else None)
            tokens = self._stats.completion_tokens if self._stats else \
                (self._stored.completion_tokens if self._stored else None)
            if tokens:
                parts.append(f"{tokens} tokens" + (f" · {rate:.1f} tok/s" if rate else ""))
            if self._stats is not None and self._stats.thinking_seconds is None \
                    and self._stats.ttft_seconds:
                parts.append(f"first token {format_seconds(self._stats.ttft_seconds)}")
        text = "  ·  ".join(parts)
        if text == self._footer_text and self.footer.is_mounted:
            return  # an update is a layout pass; the footer rarely changes while streaming
        self._footer_text = text
        self.footer.set_class(warn, "-warn")
        self.footer.update(literal(text))
        self.footer.display = bool(parts)
