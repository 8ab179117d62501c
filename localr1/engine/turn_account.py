"""The bookkeeping of one streaming turn, shared by the engine and the parallel decoder."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from localr1.engine.events import AnswerDelta, Event, FinishReason, ReasoningDelta, TurnStats
from localr1.engine.reasoning import SplitDelta, ThinkSplitter
from localr1.engine.repetition import RepetitionDetector


@dataclass
class TurnAccount:
    """Mutable bookkeeping of one streaming turn: its splitter, token counts and times, and
    the TurnStats they add up to. The engine and the parallel decoder both keep one."""

    prompt_tokens: int
    cached_prompt_tokens: int
    splitter: ThinkSplitter
    max_new: int
    started: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    thinking_ended_at: float | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning_budget_hit: bool = False
    answered_early: bool = False
    finish_reason: FinishReason = "length"
    repetition: RepetitionDetector = field(default_factory=RepetitionDetector)

    def feed(self, text: str, now: float, generated: bool = True) -> Iterator[Event]:
        was_reasoning = self.splitter.in_reasoning
        deltas = self.splitter.feed(text)
        if generated and (was_reasoning or self.splitter.in_reasoning):
            self.reasoning_tokens += 1
        if was_reasoning and not self.splitter.in_reasoning:
            self.thinking_ended_at = now
        yield from delta_events(deltas)

    def is_looping(self, token: int) -> bool:
        """Whether the output, with this generated token, keeps repeating one span: the
        turn then ends with finish reason "repetition" (what was written stays)."""
        return self.repetition.feed(token)

    def finish(self, tail: str) -> Iterator[Event]:
        yield from delta_events(self.splitter.feed(tail) + self.splitter.finish())

    def stats(self, dropped_messages: int) -> TurnStats:
        end = time.perf_counter()
        first = self.first_token_at
        generating = (self.last_token_at or end) - first if first else 0.0
        thinking = None
        if self.splitter.saw_reasoning and first is not None:
            thinking = (self.thinking_ended_at or self.last_token_at or end) - first
        return TurnStats(
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            completion_tokens=self.completion_tokens,
            reasoning_tokens=self.reasoning_tokens if self.splitter.saw_reasoning else 0,
            reasoning_truncated=self.splitter.reasoning_truncated,
            reasoning_budget_hit=self.reasoning_budget_hit,
            answered_early=self.answered_early,
            dropped_messages=dropped_messages,
            ttft_seconds=(first - self.started) if first else end - self.started,
            tokens_per_second=_rate(self.completion_tokens, generating),
            thinking_seconds=thinking,
            total_seconds=end - self.started,
        )


def max_new_tokens(n_ctx: int, prompt_tokens: int, max_tokens: int) -> int:
    """Tokens a turn may generate: what is left of the context, capped by max_tokens."""
    room = n_ctx - prompt_tokens
    return min(room, max_tokens) if max_tokens > 0 else room


def delta_events(deltas: Sequence[SplitDelta]) -> Iterator[ReasoningDelta | AnswerDelta]:
    """The splitter's deltas as engine events."""
    for delta in deltas:
        yield ReasoningDelta(delta.text) if delta.kind == "reasoning" else AnswerDelta(delta.text)


def _rate(tokens: int, seconds: float) -> float:
    # The first token's time is prompt processing; the rate counts the tokens decoded after it.
    return (tokens - 1) / seconds if tokens > 1 and seconds > 0 else 0.0
