"""The vectorized sampler keeps exactly the tokens llama.cpp's chain keeps (top-k, top-p, min-p,
temperature), with the same logits, on peaked, flat and tied rows; and its draws follow the
softmax over them."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from localr1.engine.events import GenerationParams
from localr1.engine.fast_sampler import FastSampler, applies


def llama_cpp_candidates(logits: np.ndarray, params: GenerationParams):
    """What llama.cpp's chain (decode_loop's order, without the final draw) leaves."""
    n = len(logits)
    data = (llama_cpp.llama_token_data * n)()
    for i, value in enumerate(logits):
        data[i].id, data[i].logit, data[i].p = i, float(value), 0.0
    array = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for sampler in (llama_cpp.llama_sampler_init_top_k(params.top_k),
                    llama_cpp.llama_sampler_init_top_p(params.top_p, 1),
                    llama_cpp.llama_sampler_init_min_p(params.min_p, 1),
                    llama_cpp.llama_sampler_init_temp(params.temperature)):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    llama_cpp.llama_sampler_apply(chain, ctypes.byref(array))
    llama_cpp.llama_sampler_free(chain)
    kept = {data[i].id: data[i].logit for i in range(array.size)}
    return kept


ROWS = {
    "peaked": lambda rng: np.where(np.arange(5000) == 17, 40.0, rng.normal(0, 1, 5000)),
    "typical": lambda rng: rng.normal(0, 3, 5000),
    "flat": lambda rng: rng.normal(0, 0.05, 5000),  # top-p needs thousands of tokens
    "wide vocabulary": lambda rng: rng.normal(0, 2.5, 152064),
}
SETTINGS = [GenerationParams(), GenerationParams(top_p=0.5), GenerationParams(top_k=40),
            GenerationParams(min_p=0.05), GenerationParams(top_p=1.0, temperature=1.3),
            GenerationParams(top_k=200, top_p=0.9, min_p=0.01, temperature=0.8)]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("params", SETTINGS, ids=lambda p: f"k{p.top_k}-p{p.top_p}-m{p.min_p}")
def test_the_candidates_are_llama_cpps(row, params):
    logits = ROWS[row](np.random.default_rng(1)).astype(np.float32)
    ids, scaled = FastSampler(params, 0, len(logits)).candidates(logits)
    expected = llama_cpp_candidates(logits, params)
    # llama.cpp adds top-p's probabilities up in float32: when the cut falls among thousands
    # of near-equal tokens it stops a little off the exact sum. What differs weighs < 0.1 %.
    probabilities = np.exp(logits.astype(np.float64) - logits.max())
    probabilities /= probabilities.sum()
    differ = list(set(ids.tolist()) ^ set(expected))
    assert probabilities[differ].sum() < 1e-3
    assert len(differ) == 0 or row == "wide vocabulary"
    for token, value in zip(ids.tolist(), scaled.tolist(), strict=True):
        if token in expected:
            assert value == pytest.approx(expected[token], rel=1e-6)


def test_draws_follow_the_softmax_of_the_candidates():
    logits = np.array([3.0, 2.5, 2.0, 0.0, -1.0, -5.0], dtype=np.float32)
    params = GenerationParams(temperature=0.7, top_p=0.95)
    sampler = FastSampler(params, 42, len(logits))
    ids, scaled = sampler.candidates(logits)
    expected = np.exp(scaled - scaled.max())
    expected /= expected.sum()
    buffer = (ctypes.c_float * len(logits))(*logits)
    draws = np.bincount([sampler.sample(buffer) for _ in range(20000)], minlength=len(logits))
    observed = draws[ids] / draws.sum()
    assert draws.sum() == draws[ids].sum()  # nothing outside the candidates
    assert np.abs(observed - expected).max() < 0.015


def test_greedy_takes_the_first_maximum_and_a_seed_repeats():
    logits = (ctypes.c_float * 4)(1.0, 5.0, 5.0, 2.0)
    assert FastSampler(GenerationParams(temperature=0), 0, 4).sample(logits) == 1
    one, two = (FastSampler(GenerationParams(), 7, 4) for _ in range(2))
    assert [one.sample(logits) for _ in range(50)] == [two.sample(logits) for _ in range(50)]


def test_repeat_penalties_stay_in_llama_cpps_chain():
    assert applies(GenerationParams()) and not applies(GenerationParams(repeat_penalty=1.1))
