"""Requests meant to break the server get an OpenAI error (never a 500 with a traceback), say
what is wrong once, in the API's terms, and cannot make the server build a huge grammar."""

from __future__ import annotations

import json
import logging
import re
import socket
from http.client import HTTPConnection

import pytest

from localr1.engine.answer_format import AnswerFormatError, json_schema_grammar
from tests.fixtures import scripted_models as sm
from tests.serve.conftest import http
from tests.serve.conftest import wait_for as _wait_for

HI = [{"role": "user", "content": "hi"}]


def _post(running, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", f"{running.base_url}/v1/chat/completions", raw,
                {"Content-Type": "application/json", **(headers or {})})


def test_hostile_values_are_4xx_not_500(serve, r1_prefill_model):
    running = serve(r1_prefill_model)
    status, body = _post(running, b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _post(running, {"messages": HI, "reasoning_effort": []})
    assert status == 422 and body["error"]["param"] == "reasoning_effort"
    status, body = _post(running, b'{"messages": [{"role": "user", "content": "hi\\ud800"}]}')
    assert status == 422 and body["error"]["param"] == "messages[0].content"
    status, body = _post(running, b'{"messages": [{"role": "user", "content": "hi"}], '
                                  b'"user": "\\udfff"}')
    assert status == 422 and body["error"]["param"] == "user"
    status, body = _post(running, {"messages": HI})
    assert status == 200 and body["choices"][0]["message"]["content"] == sm.ANSWER_TEXT


def test_a_client_gone_mid_upload_is_no_error(serve, r1_prefill_model, caplog):
    running = serve(r1_prefill_model, parallel=1)
    port = int(running.base_url.rsplit(":", 1)[1])
    tasks = running.server._uvicorn.server_state.tasks
    with caplog.at_level(logging.WARNING, logger="localr1.serve"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         b'{"messages":')
            _wait_for(lambda: len(tasks) == 1, "the request being read")
        _wait_for(lambda: not tasks, "the request handled")
    assert not [r for r in caplog.records if r.name == "localr1.serve"]
    assert _post(running, {"messages": HI})[0] == 200



def test_a_schema_that_would_make_a_huge_grammar_is_refused(serve, r1_prefill_model):
    with pytest.raises(AnswerFormatError, match="minItems"):
        json_schema_grammar({"type": "array", "minItems": 10**8})
    with pytest.raises(AnswerFormatError, match="pattern"):
        json_schema_grammar({"type": "string", "pattern": "^a{1,99999999}$"})
    with pytest.raises(AnswerFormatError, match="maxLength"):
        json_schema_grammar({"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "string", "maxLength": 10**9}}}})
    assert "root" in json_schema_grammar({"type": "array", "maxItems": 5})
    running = serve(r1_prefill_model)
    status, body = _post(running, {"messages": HI, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "array",
                                                          "minItems": 10**8}}}})
    assert status == 422 and body["error"]["param"] == "response_format"
    assert "minItems" in body["error"]["message"]


def test_error_messages_name_the_field_once_in_api_terms(serve, r1_prefill_model):
    running = serve(r1_prefill_model, n_ctx_per_sequence=128)
    for bad in ({"response_format": "json"}, {"n": 2}, {"logprobs": True},
                {"tools": [{"type": "function"}]}):
        status, body = _post(running, {"messages": HI, **bad})
        [param] = bad
        message = body["error"]["message"]
        assert status == 422 and len(re.findall(rf"\b{param}\b", message)) == 1, message
    status, body = _post(running, {"messages": [{"role": "user", "content": "word " * 400}],
                                   "max_tokens": 8})
    message = body["error"]["message"]
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert "--" not in message and "max_tokens" in message and "server's context" in message


def test_a_non_ascii_api_key_matches(serve, r1_prefill_model):
    running = serve(r1_prefill_model, api_key="clé-ü")
    port = int(running.base_url.rsplit(":", 1)[1])

    def status_with(key: str) -> int:
        connection = HTTPConnection("127.0.0.1", port, timeout=60)
        connection.putrequest("GET", "/v1/models")
        connection.putheader("Authorization", b"Bearer " + key.encode("utf-8"))
        connection.endheaders()
        status = connection.getresponse().status
        connection.close()
        return status

    assert status_with("clé-ü") == 200
    assert status_with("cle-u") == 401
