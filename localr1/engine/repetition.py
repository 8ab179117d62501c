"""Spotting a model that repeats itself: the same span of tokens over and over.

Small models, base models without a chat template and R1 distills (endless thinking) can loop
on a phrase until the context is full. The detector sees the generated token ids one at a time
and trips when the last tokens are one span of 1..MAX_SPAN tokens repeated many times in a row.

For each span length L it keeps how many tokens in a row equalled the token L before them;
a run of r such tokens means the last r + L tokens are one L-token span repeated. That is
MAX_SPAN comparisons a token, whatever the length of the turn.

Thresholds: at least MIN_REPEATS copies and MIN_TOKENS tokens in a row. Real text never repeats
exactly that long: table rows and numbered lists differ in their numbers, code in its names,
and even data that does repeat in code blocks stays under it (a 10x10 or 16x16 grid of zeros,
a dozen printed numpy rows of zeros, a 32-line hex dump of zero bytes: up to 32 copies of a
48-token line). "2+2? 2+2? ..." trips after MIN_TOKENS tokens (seconds of a small model), a
48-token sentence after MIN_REPEATS copies. A span longer than MAX_SPAN goes unnoticed (the
max_tokens limit and Esc remain for those).
"""

from __future__ import annotations

MAX_SPAN = 48  # longest repeated span looked for, in tokens (a long sentence)
MIN_REPEATS = 40  # copies of the span in a row
MIN_TOKENS = 640  # tokens the repeated stretch covers, at least


class RepetitionDetector:
    """Fed one generated token at a time; `feed` returns True once the output is looping."""

    def __init__(self, max_span: int = MAX_SPAN, min_repeats: int = MIN_REPEATS,
                 min_tokens: int = MIN_TOKENS) -> None:
        self._max_span = max_span
        # A run of matches this long (plus the first copy of the span) trips span L.
        self._needed = [0] + [max(min_repeats * span, min_tokens) - span
                              for span in range(1, max_span + 1)]
        self._runs = [0] * (max_span + 1)
        self._recent: list[int] = []  # the last max_span + 1 tokens
        self.span: int | None = None  # the repeated span's length, once tripped

    def feed(self, token: int) -> bool:
        recent = self._recent
        recent.append(token)
        if len(recent) > self._max_span + 1:
            del recent[0]
        runs, needed = self._runs, self._needed
        for span in range(1, len(recent)):
            if recent[-1 - span] == token:
                runs[span] += 1
                if runs[span] >= needed[span] and self.span is None:
                    self.span = span
            else:
                runs[span] = 0
        return self.span is not None
