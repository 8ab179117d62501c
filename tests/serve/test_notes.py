"""A turn that stopped early says why: `notes` (an extension field) in the completion and in
the stream's finish chunk, and a line in the server's log."""

from __future__ import annotations

import json
import logging

import httpx2 as httpx
import pytest

from tests.fixtures.scripted_models import build_scripted_model

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def repeat_model(tmp_path_factory):
    return build_scripted_model(tmp_path_factory.mktemp("repeat") / "repeat.gguf", "repeat")


def test_a_repetition_stop_comes_with_a_note(serve, repeat_model, caplog):
    running = serve(repeat_model, n_ctx_per_sequence=2048)
    url = f"{running.base_url}/v1/chat/completions"
    with caplog.at_level(logging.WARNING, logger="localr1.serve"):
        reply = httpx.post(url, json={"messages": HI}, timeout=300).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert "repeating" in reply["notes"][0]
    assert "reasoning was cut off" in reply["notes"][1]
    assert any("repeating" in r.getMessage() for r in caplog.records)
    with httpx.stream("POST", url, json={"messages": HI, "stream": True},
                      timeout=300) as response:
        data = [line for line in response.iter_lines() if line.startswith("data:")]
    assert data[-1] == "data: [DONE]"
    finish = json.loads(data[-2].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] == "length"
    assert "repeating" in finish["notes"][0]


def test_a_plain_answer_has_no_notes(serve, r1_prefill_model):
    running = serve(r1_prefill_model)
    reply = httpx.post(f"{running.base_url}/v1/chat/completions", json={"messages": HI},
                       timeout=300).json()
    assert reply["choices"][0]["finish_reason"] == "stop" and "notes" not in reply
