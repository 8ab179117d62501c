"""The one-line notes a finished turn gets: why it ended early or looks cut off.

A pure function of the turn's statistics, so `run` (stderr and `--json`), batch records and
the server can say the same thing.
"""

from __future__ import annotations

from localr1.engine.events import TurnStats


def turn_notes(stats: TurnStats, remote: bool = False) -> list[str]:
    """`remote`: the model runs on a server (`--endpoint`), whose context `--ctx` cannot set."""
    notes = []
    if stats.finish_reason == "repetition":
        notes.append(f"stopped after {stats.completion_tokens} tokens: the model kept repeating "
                     "itself (what it wrote is kept)")
    if stats.reasoning_truncated:
        notes.append("the reasoning was cut off before the model finished thinking")
    if stats.finish_reason == "length":
        fix = "raise --max-tokens" if remote else "raise --max-tokens or --ctx"
        notes.append(f"stopped after {stats.completion_tokens} tokens (max tokens or context "
                     f"window reached); {fix} for a longer reply")
    return notes
