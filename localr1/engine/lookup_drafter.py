"""Prompt-lookup drafting (``--draft lookup``): guess the next tokens from the context itself.

When the text being written repeats earlier text (code being rewritten, a quoted passage, a
model looping over its own reasoning), the tokens that followed the last earlier occurrence of
the current suffix are a cheap draft that the target model then verifies, like llama.cpp's
``lookup`` example and transformers' ``prompt_lookup_num_tokens``. No second model is loaded.

:class:`NgramLookup` keeps one sequence's tokens and an index from each n-gram to the position
just after its most recent occurrence, updated as tokens are appended, so ``extend`` costs
O(max_ngram) per token and ``propose`` a few dictionary lookups and O(n_max) comparisons: the
context is never rescanned.
``truncate`` undoes the index entries of the removed tokens, O(removed tokens), so drafted
tokens can be appended and taken back as cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEFAULT_MAX_NGRAM", "DEFAULT_MIN_NGRAM", "NgramLookup"]

# llama.cpp's lookup (common/ngram-cache.h) matches n-grams of 1 to 4 tokens (LLAMA_NGRAM_MAX):
# four tokens of context already pin a continuation down, so longer keys only cost index space.
DEFAULT_MAX_NGRAM = 4
# llama.cpp trusts a 1-gram only after seeing it at least twice with one follower in >= 66 % of
# cases; this index keeps no counts (only the latest occurrence), so a lone token such as "the"
# or "," would draft whatever once followed it and mostly be rejected (replaying SmolLM2's
# answers, 1-grams drafted 8-60 % more tokens for 3-7 % more accepted). Two tokens is the
# shortest match worth a verification.
DEFAULT_MIN_NGRAM = 2


class NgramLookup:
    """The n-gram index of one sequence: tokens go in with ``extend``, drafts come out of
    ``propose``. Not thread-safe: one per sequence, used by the thread that decodes it."""

    def __init__(self, max_ngram: int = DEFAULT_MAX_NGRAM,
                 min_ngram: int = DEFAULT_MIN_NGRAM) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self._tokens: list[int] = []
        # n-gram -> index of the token that followed its most recent occurrence. The n-grams
        # ending at the last token are not in it yet (no follower): a lookup of the current
        # suffix therefore finds the most recent *earlier* occurrence.
        self._follower: dict[tuple[int, ...], int] = {}
        # _replaced[i]: for each n-gram registered when token i arrived, the follower it had
        # before (None: it was new), so truncate can restore the index exactly.
        self._replaced: list[tuple[int | None, ...]] = []

    def __len__(self) -> int:
        return len(self._tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Tokens appended to the context (the prompt first, then each accepted token)."""
        for token in tokens:
            self._append(int(token))

    def _append(self, token: int) -> None:
        tokens = self._tokens
        end = len(tokens)  # the new token's index: the follower of the n-grams ending before it
        replaced = []
        for n in range(self.min_ngram, min(self.max_ngram, end) + 1):
            key = tuple(tokens[end - n:end])
            replaced.append(self._follower.get(key))
            self._follower[key] = end
        self._replaced.append(tuple(replaced))
        tokens.append(token)

    def truncate(self, n: int) -> None:
        """The context was cut back to its first ``n`` tokens (a rejected draft, a trimmed or
        reused prompt): the index forgets the rest, as if they had never been added."""
        if n < 0:
            raise ValueError(f"cannot truncate to {n} tokens")
        tokens = self._tokens
        while len(tokens) > n:
            end = len(tokens) - 1  # the index of the token being removed
            tokens.pop()
            replaced = self._replaced.pop()
            for n_gram, previous in zip(range(self.min_ngram, self.max_ngram + 1), replaced,
                                        strict=False):
                key = tuple(tokens[end - n_gram:end])
                if previous is None:
                    del self._follower[key]
                else:
                    self._follower[key] = previous

    def propose(self, n_max: int) -> list[int]:
        """The tokens that followed the most recent earlier occurrence of the longest suffix of
        ``min_ngram``..``max_ngram`` tokens; [] when no such suffix recurs.

        The draft is as long as the stretch of text that already agrees with that occurrence
        (at least the n-gram, at most ``n_max``): a fresh 2-token match drafts 2 tokens, a
        passage copied for 10 tokens drafts 10. Wrong draft tokens still cost the model a
        verification each; replaying SmolLM2's greedy answers (a rewrite, a typo fix, a story)
        this evaluated 20-50 % fewer tokens than always drafting ``n_max`` = 16, for 5-12 %
        more decode steps."""
        tokens = self._tokens
        end = len(tokens)
        if n_max <= 0:
            return []
        for n in range(min(self.max_ngram, end), self.min_ngram - 1, -1):
            start = self._follower.get(tuple(tokens[end - n:end]))
            if start is not None:
                agreed = n
                while (agreed < n_max and agreed < start
                       and tokens[start - 1 - agreed] == tokens[end - 1 - agreed]):
                    agreed += 1
                return self._continuation(start, min(n_max, agreed))
        return []

    def _continuation(self, start: int, n_max: int) -> list[int]:
        """tokens[start:start + n_max], where a run past the end goes on with the draft itself:
        a match ``period`` tokens back predicts text that repeats with that period (a model
        looping over one sentence), like an overlapping LZ77 copy."""
        tokens = self._tokens
        period = len(tokens) - start
        draft = tokens[start:start + n_max]
        while len(draft) < n_max:
            draft.append(draft[len(draft) - period])
        return draft
