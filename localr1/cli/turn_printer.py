"""`localr1 run`'s output: a streamed turn written to stdout (answer) and stderr (reasoning).

Plain text when piped, like `llm`: the answer alone on stdout, so `localr1 run ... | jq` or
`> file` get just the answer. On a terminal the reasoning is dimmed, and model text never
reaches the terminal with its control characters live.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TextIO

from localr1.chat_session import TurnSaved, acceptance_line, speculative_summary
from localr1.durations import format_seconds
from localr1.engine.events import (
    AnswerDelta,
    ContextTrimmed,
    Event,
    GenerationParams,
    ReasoningDelta,
    TurnDone,
    TurnStats,
)
from localr1.engine.turn_notes import turn_notes
from localr1.terminal_text import visible_controls

DIM, RESET = "\x1b[2m", "\x1b[0m"


@dataclass
class TurnResult:
    reasoning: str = ""
    answer: str = ""
    stats: TurnStats | None = None
    notes: list[str] = field(default_factory=list)


class _Stream:
    """One output stream; sanitises model text when it is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.is_tty = stream.isatty()
        self.at_line_start = True

    def write_model_text(self, text: str, style: str = "") -> None:
        if not text:
            return
        shown = visible_controls(text) if self.is_tty else text
        if style and self.is_tty:
            shown = f"{style}{shown}{RESET}"
        self.stream.write(shown)
        self.stream.flush()
        self.at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        if not self.at_line_start:
            self.stream.write("\n")
            self.stream.flush()
            self.at_line_start = True


class TurnPrinter:
    """Consumes engine events; streams them unless `json_output`, and keeps the whole turn."""

    def __init__(self, *, show_reasoning: bool = True, json_output: bool = False,
                 stdout: TextIO | None = None, stderr: TextIO | None = None,
                 remote: bool = False, draft: str | None = None) -> None:
        """`draft`: the draft model's name or "lookup" when decoding speculatively."""
        self.show_reasoning = show_reasoning and not json_output
        self.remote = remote  # --endpoint: notes do not suggest --ctx
        self.json_output = json_output
        self.draft = draft
        self.out = _Stream(stdout or sys.stdout)
        self.err = _Stream(stderr or sys.stderr)
        self.result = TurnResult()
        self._thinking_since: float | None = None
        self.conversation_id: int | None = None

    def handle(self, event: Event | TurnSaved) -> None:
        if isinstance(event, ReasoningDelta):
            if not self.result.reasoning and self.show_reasoning and self.err.is_tty:
                self._thinking_since = time.monotonic()
                self.err.stream.write(f"{DIM}Thinking…{RESET}\n")
            self.result.reasoning += event.text
            if self.show_reasoning:
                self.err.write_model_text(event.text, DIM)
        elif isinstance(event, AnswerDelta):
            if not self.result.answer and self.show_reasoning:
                self.err.end_line()  # the reasoning block ends where the answer starts
                if self._thinking_since is not None:
                    took = format_seconds(time.monotonic() - self._thinking_since)
                    self.err.stream.write(f"{DIM}Thought for {took}{RESET}\n\n")
                    self.err.stream.flush()
            self.result.answer += event.text
            if not self.json_output:
                self.out.write_model_text(event.text)
        elif isinstance(event, ContextTrimmed):
            self.note(f"left out the {event.dropped_messages} oldest messages to fit the "
                      f"context window ({event.prompt_tokens} prompt tokens)")
        elif isinstance(event, TurnDone):
            self.result.stats = event.stats
            self._finish(event.stats)
        elif isinstance(event, TurnSaved):
            self.conversation_id = event.conversation_id

    def note(self, text: str) -> None:
        self.result.notes.append(text)
        if not self.json_output:
            self.err.end_line()
            self.err.stream.write(f"localr1: {text}\n")
            self.err.stream.flush()

    def _finish(self, stats: TurnStats) -> None:
        if not self.json_output:
            self.err.end_line()
            self.out.end_line()
        for text in turn_notes(stats, remote=self.remote):
            self.note(text)
        if self.draft is not None and self.err.is_tty and not self.json_output:
            self.err.stream.write(f"draft: {acceptance_line(stats)}\n")
            self.err.stream.flush()

    def as_json(self, model: str, conversation_id: int | None = None,
                params: GenerationParams | None = None, placement: str | None = None) -> str:
        stats = self.result.stats
        assert stats is not None
        data = asdict(stats)
        return json.dumps({
            "model": model,
            "conversation_id": conversation_id,
            "reasoning": self.result.reasoning,
            "answer": self.result.answer,
            "finish_reason": stats.finish_reason,
            "usage": {
                "prompt_tokens": stats.prompt_tokens,
                "cached_prompt_tokens": stats.cached_prompt_tokens,
                "completion_tokens": stats.completion_tokens,
                "reasoning_tokens": stats.reasoning_tokens,
            },
            "timings": {
                "ttft_ms": round(stats.ttft_seconds * 1000, 1),
                "tokens_per_second": round(stats.tokens_per_second, 2),
                "thinking_seconds": None if stats.thinking_seconds is None
                else round(stats.thinking_seconds, 3),
                "total_seconds": round(stats.total_seconds, 3),
            },
            "reasoning_truncated": data["reasoning_truncated"],
            "reasoning_budget_hit": data["reasoning_budget_hit"],
            "dropped_messages": data["dropped_messages"],
            "notes": self.result.notes,
            # null without a draft model or lookup; see chat_session.speculative_summary.
            "speculative": speculative_summary(stats, self.draft),
            # The sampling this turn used: flags, else the conversation's, else config.toml.
            "params": params.recorded() if params is not None else None,
            # Where the layers ran: "CPU", "CUDA 29/29 layers", "CPU 10 layers · RPC h:p 21 layers".
            "placement": placement,
        }, ensure_ascii=False)
