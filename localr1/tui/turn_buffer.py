"""The hand-off between a generating thread and the screen: appended per token, drained on a
timer.

The worker calls `add` for every delta (a lock and a list append: generation never waits for
the screen); the UI calls `drain` a few times a second and renders what came in one go.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

Kind = Literal["reasoning", "answer"]


@dataclass(frozen=True)
class Drained:
    reasoning: str
    answer: str
    tokens: int  # deltas received so far (about one per token)
    first_token_at: float | None  # perf_counter times, set by the generating thread
    last_token_at: float | None
    reasoning_started_at: float | None
    answer_started_at: float | None

    def tokens_per_second(self) -> float:
        first, last = self.first_token_at, self.last_token_at
        if first is None or last is None or last <= first or self.tokens < 2:
            return 0.0
        return (self.tokens - 1) / (last - first)


class TurnBuffer:
    """Thread-safe accumulation of one turn's streamed text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasoning: list[str] = []
        self._answer: list[str] = []
        self._tokens = 0
        self.started_at = time.perf_counter()
        self._first: float | None = None
        self._last: float | None = None
        self._reasoning_started: float | None = None
        self._answer_started: float | None = None

    def add(self, kind: Kind, text: str) -> None:
        now = time.perf_counter()
        with self._lock:
            if kind == "reasoning":
                self._reasoning.append(text)
                if self._reasoning_started is None:
                    self._reasoning_started = now
            else:
                self._answer.append(text)
                if self._answer_started is None:
                    self._answer_started = now
            self._tokens += 1
            if self._first is None:
                self._first = now
            self._last = now

    def drain(self) -> Drained:
        with self._lock:
            reasoning, answer = "".join(self._reasoning), "".join(self._answer)
            self._reasoning.clear()
            self._answer.clear()
            return Drained(reasoning, answer, self._tokens, self._first, self._last,
                           self._reasoning_started, self._answer_started)
