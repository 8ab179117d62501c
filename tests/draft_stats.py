"""A finished turn's statistics with given draft counts, for the tests of how front ends show
speculative decoding."""

from __future__ import annotations

from localr1.engine.events import TurnStats


def draft_turn_stats(drafted: int, accepted: int) -> TurnStats:
    return TurnStats(finish_reason="stop", prompt_tokens=5, cached_prompt_tokens=0,
                     completion_tokens=40, reasoning_tokens=10, reasoning_truncated=False,
                     reasoning_budget_hit=False, dropped_messages=0, ttft_seconds=0.1,
                     tokens_per_second=50.0, thinking_seconds=None, total_seconds=1.0,
                     draft_tokens=drafted, draft_accepted=accepted)
