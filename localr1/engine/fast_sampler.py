"""R1's sampling (top-k, top-p, min-p, temperature) in a few vectorized passes over the logits.

llama.cpp's sampler chain copies every logit into a candidate array and sorts its head for
top-p on each token: over R1's 152k-token vocabulary that costs more than decoding a small
model. The same distribution needs less: one pass for the maximum and the softmax normalizer,
one for the tokens whose logits are near the maximum (where top-p's mass lies), and a sort of
those few. Only a very flat row, whose mass the head does not hold, has most of the vocabulary
sorted, as llama.cpp sorts it then.

Same rules, same order as the chain in decode_loop (llama-cpp-python's): top-k (0 = off), then
top-p on the softmax of what is left, min-p against the most likely token, temperature, then a
draw. Temperature 0 is the greedy pick (the first maximum, as llama.cpp's greedy sampler). The
random stream is numpy's (seeded per turn), not llama.cpp's, so a seed gives its own, fixed,
text. Repeat penalties and grammars keep llama.cpp's chain (`applies`).
"""

from __future__ import annotations

import ctypes

import numpy as np
import numpy.random  # noqa: F401  (numpy loads it lazily: 7 ms at the first draw otherwise)

from localr1.engine.events import GenerationParams

# Tokens this far below the best logit weigh < e^-8 of it each: the first look at the head takes
# those above; only when they hold less than top-p's mass is the window widened. (8 halved the
# time per draw against 16 on SmolLM2's own rows: 116 vs 238 us.)
HEAD_WINDOW = 8.0
SORTED_FIRST = 256  # as llama.cpp's top-p: a partial sort of this many before a larger one


def applies(params: GenerationParams) -> bool:
    """Whether these settings sample here (no repeat penalty: its state lives in the chain)."""
    return params.repeat_penalty == 1.0


class FastSampler:
    def __init__(self, params: GenerationParams, seed: int, n_vocab: int) -> None:
        self._params = params
        self._rng = np.random.default_rng(seed)
        self._n_vocab = n_vocab

    def sample(self, logits_pointer) -> int:
        """The next token from a row of `n_vocab` float logits (llama_get_logits_ith)."""
        logits = np.ctypeslib.as_array(
            ctypes.cast(logits_pointer, ctypes.POINTER(ctypes.c_float)), (self._n_vocab,))
        if self._params.temperature <= 0:
            return int(np.argmax(logits))
        ids, scaled = self.candidates(logits)
        weights = np.cumsum(np.exp(scaled - scaled.max(), dtype=np.float64))
        index = int(np.searchsorted(weights, self._rng.random() * weights[-1], side="right"))
        return int(ids[min(index, len(ids) - 1)])

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokens a draw chooses from and their logits after the temperature: what
        llama.cpp's chain leaves for its dist sampler."""
        params = self._params
        ids = None
        if 0 < params.top_k < len(logits):
            ids = np.argpartition(logits, -params.top_k)[-params.top_k:]
            logits = logits[ids]
        kept, kept_logits = self._top_p(logits, params.top_p)
        if ids is not None:
            kept = ids[kept]
        if params.min_p > 0:
            keep = kept_logits >= kept_logits.max() + np.log(params.min_p)  # keeps the best
            kept, kept_logits = kept[keep], kept_logits[keep]
        return kept, kept_logits / params.temperature

    @staticmethod
    def _top_p(logits: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
        """The top-p tokens (ids into `logits`) and their logits."""
        if top_p >= 1.0:
            return np.arange(len(logits)), logits
        best = float(logits.max())
        weights = np.exp(logits - best, dtype=np.float32)
        goal = top_p * float(weights.sum(dtype=np.float64))
        window = HEAD_WINDOW
        while True:
            head = np.flatnonzero(logits >= best - window)
            if float(weights[head].sum(dtype=np.float64)) >= goal or len(head) == len(logits):
                break
            window *= 2
        # Sort only the best few of the head: 256 first, four times more while they fall short.
        k = SORTED_FIRST
        while len(head) > k:
            top = head[np.argpartition(-logits[head], k)[:k]]
            if float(weights[top].sum(dtype=np.float64)) >= goal:
                head = top
                break
            k *= 4
        order = head[np.argsort(-logits[head], kind="stable")]
        n = int(np.searchsorted(np.cumsum(weights[order], dtype=np.float64), goal)) + 1
        order = order[:min(n, len(order))]
        return order, logits[order]
