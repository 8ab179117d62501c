"""Speculative decoding in the server: OpenAI's predicted-output usage fields and llama-server's
draft_n/draft_n_accepted when a turn drafted (none otherwise), and the draft handed to the
engine: a draft model for the first model only, `lookup` for every model."""

from __future__ import annotations

import httpx2 as httpx

from localr1.serve.responses import timings, usage
from tests.draft_stats import draft_turn_stats
from tests.serve.conftest import install

HI = [{"role": "user", "content": "hi"}]


def test_usage_has_accepted_and_rejected_predictions_when_drafted():
    details = usage(draft_turn_stats(400, 312))["completion_tokens_details"]
    assert details == {"reasoning_tokens": 10, "accepted_prediction_tokens": 312,
                       "rejected_prediction_tokens": 88}
    assert timings(draft_turn_stats(400, 312))["draft_n"] == 400
    assert timings(draft_turn_stats(400, 312))["draft_n_accepted"] == 312


def test_usage_without_drafting_is_as_before():
    assert usage(draft_turn_stats(0, 0))["completion_tokens_details"] == {"reasoning_tokens": 10}
    assert "draft_n" not in timings(draft_turn_stats(0, 0))


def _ask(running, model: str | None = None, **fields) -> dict:
    body = {"messages": HI, **({"model": model} if model else {}), **fields}
    response = httpx.post(f"{running.base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_draft_model_pairs_with_the_first_model_only(serve, models_dir, engine_loads,
                                                       r1_prefill_model, r1_original_model):
    first = install(r1_prefill_model, models_dir, "first")
    install(r1_original_model, models_dir, "other")
    running = serve(first, name="first", draft=r1_prefill_model)
    body = _ask(running, temperature=0)
    assert engine_loads[-1].draft == r1_prefill_model
    details = body["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] > 0  # the model drafts for itself: all kept
    assert details["rejected_prediction_tokens"] == 0
    assert body["timings"]["draft_n"] == body["timings"]["draft_n_accepted"] > 0
    _ask(running, "other")  # a swap: the draft may not share this model's vocabulary
    assert engine_loads[-1].model_path.name == "other.gguf"
    assert engine_loads[-1].draft is None


def test_lookup_drafts_for_every_model(serve, models_dir, engine_loads, r1_prefill_model,
                                       r1_original_model):
    first = install(r1_prefill_model, models_dir, "first")
    install(r1_original_model, models_dir, "other")
    running = serve(first, name="first", draft="lookup")
    _ask(running, "other")
    assert [c.draft for c in engine_loads] == ["lookup", "lookup"]
