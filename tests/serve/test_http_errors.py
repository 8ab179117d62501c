"""Bad requests get OpenAI-shaped errors with the right status, and the server goes on."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fixtures import scripted_models as sm
from tests.serve.conftest import http

HI = [{"role": "user", "content": "hi"}]


def _post(running, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    return http("POST", f"{running.base_url}/v1/chat/completions", body,
                {"Content-Type": "application/json", **(headers or {})})


def test_api_key_needed_on_every_route_but_health(serve, r1_prefill_model):
    running = serve(r1_prefill_model, api_key="s3cret")
    with pytest.raises(openai.AuthenticationError) as caught:
        running.client(api_key="wrong").chat.completions.create(model="x", messages=HI)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    status, body = http("GET", f"{running.base_url}/v1/models")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, body = http("GET", f"{running.base_url}/health")
    assert status == 200 and body["status"] == "ok"
    reply = running.client(api_key="s3cret").chat.completions.create(
        model=r1_prefill_model.stem, messages=HI)
    assert reply.choices[0].message.content == sm.ANSWER_TEXT


def test_bad_bodies_are_400_413_422_and_the_server_goes_on(serve, r1_prefill_model):
    running = serve(r1_prefill_model, max_body_bytes=4096)
    status, body = _post(running, b'{"messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _post(running, b"[1, 2]")
    assert status == 400
    status, body = _post(running, json.dumps(
        {"messages": [{"role": "user", "content": "x" * 5000}]}).encode())
    assert status == 413 and body["error"]["code"] == "request_too_large"
    for bad, param in [({"messages": []}, "messages"),
                       ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
                       ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
                       ({"messages": HI, "temperature": "hot"}, "temperature"),
                       ({"messages": HI, "temperature": float("nan")}, "temperature"),
                       ({"messages": HI, "max_tokens": -1}, "max_tokens"),
                       ({"messages": HI, "reasoning_effort": "extreme"}, "reasoning_effort"),
                       ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
                       ({"messages": HI, "n": 2}, "n"),
                       ({"messages": HI, "response_format": {"type": "xml"}},
                        "response_format")]:
        status, body = _post(running, json.dumps(bad).encode())
        assert status == 422, bad
        assert body["error"]["param"] == param, bad
        assert set(body["error"]) == {"message", "type", "code", "param"}
    status, body = http("GET", f"{running.base_url}/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
    reply = running.client().chat.completions.create(model=r1_prefill_model.stem, messages=HI)
    assert reply.choices[0].message.content == sm.ANSWER_TEXT


def test_unknown_model_is_404(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HI)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # never a path on the server's disk
        client.chat.completions.create(model=str(r1_prefill_model), messages=HI)


def test_a_prompt_longer_than_the_context_is_400(serve, r1_prefill_model):
    client = serve(r1_prefill_model, n_ctx_per_sequence=128).client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=r1_prefill_model.stem,
                                       messages=[{"role": "user", "content": "word " * 400}])
    assert caught.value.body["code"] == "context_length_exceeded"
