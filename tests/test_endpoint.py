"""`--endpoint URL`: run, batch and chat answered by an OpenAI-compatible server (the scripted
stub in tests/openai_stub.py), looking the same as with a local model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.endpoint_http import Endpoint, RetryPolicy
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.openai_wire import EndpointError, StreamBroken, sse_chunks, wire_delta
from localr1.engine.remote_engine import RemoteEngine
from localr1.engine.remote_reasoning import RemoteReasoningSplitter
from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.openai_stub import (
    Hangup,
    Stall,
    Status,
    Stream,
    StubOpenAI,
    Whole,
    inline_stream,
    pieces,
    reasoning_field_stream,
)
from tests.serve.conftest import serve  # noqa: F401 (a fixture)

REASONING, ANSWER = sm.REASONING_TEXT, sm.ANSWER_TEXT
USAGE = {"prompt_tokens": 9, "completion_tokens": 21,
         "completion_tokens_details": {"reasoning_tokens": 12}}

SHAPES = {
    "reasoning_content": lambda **kw: reasoning_field_stream("reasoning_content", REASONING,
                                                             ANSWER, **kw),
    "reasoning": lambda **kw: reasoning_field_stream("reasoning", REASONING, ANSWER, **kw),
    "inline": lambda **kw: inline_stream(f"<think>\n{REASONING}\n</think>\n\n{ANSWER}", **kw),
    "inline_prompt_opened": lambda **kw: inline_stream(f"{REASONING}\n</think>\n\n{ANSWER}",
                                                       **kw),
}


def localr1(*args, input="", env=None):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=120,
                          env=env or os.environ.copy())


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def turn(engine, text="hi", params=None, cancel=None):
    events = list(engine.stream_chat([ChatMessage("user", text)], params or GenerationParams(),
                                     cancel=cancel))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    (done,) = [e for e in events if isinstance(e, TurnDone)]
    assert events[-1] is done
    return reasoning, answer, done.stats


@pytest.mark.parametrize("shape", SHAPES)
def test_every_reasoning_shape_comes_back_split(shape):
    with StubOpenAI([SHAPES[shape](usage=USAGE)]) as stub:
        engine = RemoteEngine.connect(stub.url)
        assert engine.info.name == "stub-r1" and engine.info.is_r1
        reasoning, answer, stats = turn(engine)
    assert (reasoning, answer) == (REASONING, ANSWER)
    assert stats.finish_reason == "stop" and not stats.reasoning_truncated
    assert (stats.prompt_tokens, stats.completion_tokens, stats.reasoning_tokens) == (9, 21, 12)
    assert stats.thinking_seconds is not None and stats.ttft_seconds >= 0


def test_without_usage_the_chunks_are_counted():
    with StubOpenAI([SHAPES["reasoning"]()]) as stub:
        _, answer, stats = turn(RemoteEngine.connect(stub.url))
    assert answer == ANSWER
    assert stats.completion_tokens == len(SHAPES["reasoning"]().pieces)
    assert 0 < stats.reasoning_tokens < stats.completion_tokens


def test_plain_answers_stream_at_once_and_prompt_opened_ones_wait_for_the_tag():
    plain = RemoteReasoningSplitter(expect_reasoning=False)
    assert [d.text for d in plain.feed("", "Hello")] == ["Hello"]
    r1 = RemoteReasoningSplitter(expect_reasoning=True)
    assert r1.feed("", "I think") == []  # reasoning or answer: not known yet
    deltas = r1.feed("", " so.</think>\n\nYes.") + r1.finish()
    assert [(d.kind, d.text) for d in deltas] == [("reasoning", "I think so."),
                                                 ("answer", "Yes.")]
    untagged = RemoteReasoningSplitter(expect_reasoning=True)
    assert untagged.feed("", "Just this.") == []
    assert [(d.kind, d.text) for d in untagged.finish()] == [("answer", "Just this.")]
    cut = RemoteReasoningSplitter(expect_reasoning=True)
    cut.feed("", "Still thinking")
    assert [d.kind for d in cut.finish(cut_short=True)] == ["reasoning"]
    assert cut.reasoning_truncated


def test_a_reasoning_field_is_reasoning_whatever_it_says():
    trace = "Tags look like <think> and </think>; so."
    with StubOpenAI([reasoning_field_stream("reasoning_content", trace, ANSWER)]) as stub:
        reasoning, answer, stats = turn(RemoteEngine.connect(stub.url))
    assert (reasoning, answer) == (trace, ANSWER) and not stats.reasoning_truncated


def test_reasoning_after_blank_content_or_after_the_answer_is_kept():
    blank_first = Stream([("content", "\n\n"), *pieces("reasoning", REASONING),
                          *pieces("content", ANSWER)])
    with StubOpenAI([blank_first]) as stub:
        reasoning, answer, _ = turn(RemoteEngine.connect(stub.url, model="plain"))
    assert (reasoning, answer) == (REASONING, ANSWER)
    late = RemoteReasoningSplitter(expect_reasoning=False)
    deltas = late.feed("", "Yes.") + late.feed("on reflection", "") + late.finish()
    assert [(d.kind, d.text) for d in deltas] == [("answer", "Yes."),
                                                 ("reasoning", "on reflection")]
    assert late.saw_reasoning


def test_a_prompt_opened_trace_counts_its_held_chunks_as_reasoning():
    shape = SHAPES["inline_prompt_opened"]()
    text = "".join(text for _, text in shape.pieces)
    tag_end = text.index("</think>") + len("</think>")
    thinking_chunks = -(-tag_end // 3)  # pieces of 3 characters, up to the end of the tag
    with StubOpenAI([shape]) as stub:  # no usage: the chunks are counted
        reasoning, answer, stats = turn(RemoteEngine.connect(stub.url))
    assert (reasoning, answer) == (REASONING, ANSWER)
    assert stats.reasoning_tokens == thinking_chunks < stats.completion_tokens
    generating = (stats.completion_tokens - 1) / stats.tokens_per_second
    assert 0 < stats.thinking_seconds < generating  # ended at </think>, not at the last chunk


def test_both_reasoning_fields_at_once_are_read_once():
    chunk = {"choices": [{"delta": {"reasoning_content": "a", "reasoning": "a",
                                    "content": None}}]}
    assert (wire_delta(chunk).reasoning, wire_delta(chunk).content) == ("a", "")


def test_out_of_tokens_while_reasoning_is_a_cut_off_trace():
    cut = Stream(pieces("reasoning", REASONING), finish_reason="length")
    with StubOpenAI([cut]) as stub:
        reasoning, answer, stats = turn(RemoteEngine.connect(stub.url))
    assert (reasoning, answer) == (REASONING, "")
    assert stats.finish_reason == "length" and stats.reasoning_truncated


def test_sse_reader_follows_the_format():
    lines = [b": keep-alive\n", b"event: message\n", b'data: {"a":\n', b"data: 1}\n", b"\n",
             b"data: [DONE]\n", b"\n", b'data: {"never": "read"}\n', b"\n"]
    assert list(sse_chunks(lines)) == [{"a": 1}, {}]


def test_endpoint_urls():
    assert Endpoint.parse("http://h:8080").url == "http://h:8080/v1"
    assert Endpoint.parse("http://h:8080/v1/").url == "http://h:8080/v1"
    assert Endpoint.parse("https://api.x.com/v1/chat/completions").url == \
        "https://api.x.com:443/v1"
    with pytest.raises(EndpointError, match="not an http"):
        Endpoint.parse("ftp://h")


def test_retry_after_is_honoured_up_to_a_cap():
    policy = RetryPolicy(tries=4, first_delay=0.5, max_delay=8.0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert policy.delay(1, "3") == 3.0
    assert policy.delay(1, "3600") == 8.0
    assert policy.delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_429_then_ok_is_retried():
    with StubOpenAI([Status(429, "slow down"), SHAPES["reasoning_content"]()]) as stub:
        _, answer, _ = turn(RemoteEngine.connect(stub.url, model="m"))
        assert answer == ANSWER and len(stub.requests) == 2


def test_503_forever_is_one_error_after_the_last_try():
    with StubOpenAI([Status(503, "loading model")]) as stub:
        engine = RemoteEngine.connect(stub.url, model="m")
        with pytest.raises(EndpointError) as caught:
            turn(engine)
        assert len(stub.requests) == engine.policy.tries
    message = str(caught.value)
    assert "HTTP 503: loading model" in message and "after 4 tries" in message
    assert "\n" not in message


def test_unreachable_server_is_one_error():
    engine = RemoteEngine(Endpoint.parse("http://127.0.0.1:9/v1"), "m",
                          policy=RetryPolicy(tries=2, first_delay=0.01))
    with pytest.raises(EndpointError, match="cannot reach the server.*after 2 tries"):
        turn(engine)


def test_a_request_the_server_dropped_is_not_sent_again():
    # It may be generating already: a slow server would answer it up to 4 times over.
    with StubOpenAI([Hangup()]) as stub:
        engine = RemoteEngine.connect(stub.url, model="m")
        with pytest.raises(StreamBroken, match="the server did not answer"):
            turn(engine)
        assert len(stub.requests) == 1


def test_cancel_ends_a_stalled_stream_as_cancelled():
    cancel = threading.Event()
    with StubOpenAI([SHAPES["reasoning"]()]) as stub:
        engine = RemoteEngine.connect(stub.url)
        events = engine.stream_chat([ChatMessage("user", "hi")], GenerationParams(),
                                    cancel=cancel)
        first = next(events)
        cancel.set()
        rest = list(events)
    assert isinstance(first, ReasoningDelta)
    assert rest[-1].stats.finish_reason == "cancelled"


def test_cancel_while_the_server_has_not_answered_yet():
    cancel = threading.Event()
    result = {}
    with StubOpenAI([Stall()]) as stub:
        engine = RemoteEngine.connect(stub.url)
        worker = threading.Thread(target=lambda: result.update(stats=turn(engine,
                                                                          cancel=cancel)[2]))
        worker.start()
        stub.wait_for_requests(1)
        cancel.set()
        worker.join(timeout=10)  # the blocked read is cut, not waited out
        assert not worker.is_alive()
    assert result["stats"].finish_reason == "cancelled"


def test_a_server_that_ignores_stream_answers_whole():
    message = {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    with StubOpenAI([Whole(message, finish_reason="length")]) as stub:
        reasoning, answer, stats = turn(RemoteEngine.connect(stub.url))
    assert (reasoning, answer, stats.finish_reason) == (REASONING, ANSWER, "length")


def test_an_error_chunk_mid_stream_is_one_error():
    broken = Stream(SHAPES["inline"]().pieces[:5], error="out of\nmemory")
    with StubOpenAI([broken]) as stub, \
            pytest.raises(EndpointError, match="stopped with an error: out of memory$"):
        turn(RemoteEngine.connect(stub.url))


def test_params_go_as_openai_fields(monkeypatch):
    with StubOpenAI([SHAPES["reasoning_content"]()], api_key="sekrit") as stub:
        env = {**os.environ, "OPENAI_API_KEY": "sekrit"}
        result = localr1("run", "--endpoint", stub.url, "-m", "r1:7b", "--seed", "7",
                         "--temperature", "0.3", "--max-tokens", "500",
                         "--reasoning-budget", "0", "-s", "Be brief.", "hi", env=env)
        assert result.returncode == 0, result.stderr
        (body,) = stub.requests
    assert body["model"] == "r1:7b" and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hi"}]
    assert (body["seed"], body["temperature"], body["max_tokens"]) == (7, 0.3, 500)
    assert body["top_p"] == 0.95
    assert "top_k" not in body and "min_p" not in body  # off: strict APIs refuse them
    assert body["reasoning_effort"] == "none"
    assert body["stream_options"] == {"include_usage": True}
    assert "response_format" not in body


def test_top_k_and_min_p_go_when_set():
    with StubOpenAI([SHAPES["reasoning_content"]()]) as stub:
        result = localr1("run", "--endpoint", stub.url, "-m", "m", "--top-k", "20",
                         "--min-p", "0.05", "hi")
        assert result.returncode == 0, result.stderr
        (body,) = stub.requests
    assert (body["top_k"], body["min_p"]) == (20, 0.05)


def test_the_environment_key_goes_only_where_no_one_can_read_it():
    for url in ("https://api.x.com/v1", "http://127.0.0.1:8080", "http://localhost:8080",
                "http://[::1]:8080"):
        assert Endpoint.parse(url, None, "env-key").api_key == "env-key", url
    lan = "http://192.168.1.20:8080/v1"
    assert Endpoint.parse(lan, None, "env-key").api_key is None
    assert Endpoint.parse(lan, "given", "env-key").api_key == "given"
    with StubOpenAI([SHAPES["reasoning_content"]()]) as stub:  # loopback: the env key goes
        env = {**os.environ, "OPENAI_API_KEY": "from-env"}
        assert localr1("run", "--endpoint", stub.url, "-m", "m", "hi", env=env).returncode == 0
        assert stub.headers[0]["Authorization"] == "Bearer from-env"


def test_out_of_tokens_notes_do_not_suggest_ctx(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one\n")
    with StubOpenAI([SHAPES["reasoning"](finish_reason="length")]) as stub:
        run = localr1("run", "--endpoint", stub.url, "-m", "m", "hi")
        batch = localr1("batch", source, "--endpoint", stub.url, "-m", "m")
    assert run.returncode == 0, run.stderr
    assert "raise --max-tokens for a longer reply" in run.stderr and "--ctx" not in run.stderr
    (note,) = records(batch.stdout)[0]["notes"]
    assert note.endswith("raise --max-tokens for a longer reply")


def test_a_wrong_key_is_one_line():
    with StubOpenAI([SHAPES["reasoning"]()], api_key="right") as stub:
        result = localr1("run", "--endpoint", stub.url, "--api-key", "wrong", "-m", "x", "hi")
    assert_one_line_error(result, "HTTP 401", "Invalid API key", "--api-key")


def test_run_looks_like_a_local_run(r1_prefill_model):
    local = localr1("run", "-m", r1_prefill_model, "--json", "hi")
    assert local.returncode == 0, local.stderr
    with StubOpenAI([SHAPES["inline_prompt_opened"](usage=USAGE)],
                    models=["r1-distill-7b"]) as stub:
        plain = localr1("run", "--endpoint", stub.url, "hi")
        as_json = localr1("run", "--endpoint", stub.url, "--json", "-c", "and again?")
        second_body = stub.requests[1]
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == ANSWER + "\n" and REASONING in plain.stderr
    assert "<think>" not in plain.stdout + plain.stderr
    data, local_data = json.loads(as_json.stdout), json.loads(local.stdout)
    assert set(data) == set(local_data) and set(data["usage"]) == set(local_data["usage"])
    assert (data["model"], data["reasoning"], data["answer"]) == ("r1-distill-7b", REASONING,
                                                                  ANSWER)
    assert data["usage"]["reasoning_tokens"] == 12
    # -c sent the history back without the earlier reasoning.
    assert [m["role"] for m in second_body["messages"]] == ["user", "assistant", "user"]
    assert second_body["messages"][1]["content"] == ANSWER
    with Store.open(app_paths().db_path) as store:
        conversation = store.conversation(data["conversation_id"])
        answer = store.branch(conversation.id)[-1]
    assert conversation.model == "r1-distill-7b" and answer.model == "r1-distill-7b"
    assert (answer.reasoning, answer.content) == (REASONING, ANSWER)
    assert answer.finish_reason == "stop"


def test_run_errors_are_one_line():
    with StubOpenAI([Status(503, "overloaded")]) as stub:
        assert_one_line_error(localr1("run", "--endpoint", stub.url, "-m", "m", "hi"),
                              "HTTP 503", "overloaded", "after 4 tries")
    with StubOpenAI([SHAPES["reasoning"](drop_after=5)]) as stub:
        assert_one_line_error(localr1("run", "--endpoint", stub.url, "-m", "m", "hi"),
                              "broke mid-answer")
    result = localr1("run", "--endpoint", "http://127.0.0.1:9/v1", "--ctx", "512", "hi")
    assert result.returncode == 2 and "--ctx cannot be used with --endpoint" in result.stderr


def test_batch_parallel_records_look_like_local_ones(tmp_path, r1_prefill_model):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{n}", "prompt": f"question {n}"}) + "\n"
                              for n in range(4)))
    local = records(localr1("batch", source, "-m", r1_prefill_model).stdout)
    with StubOpenAI([SHAPES["reasoning"](usage=USAGE)], models=["deepseek-r1:7b"]) as stub:
        result = localr1("batch", source, "--endpoint", stub.url, "--parallel", "2",
                         "--seed", "3", "--save")
        bodies = stub.requests
    assert result.returncode == 0, result.stderr
    remote = records(result.stdout)
    assert sorted(r["id"] for r in remote) == ["q0", "q1", "q2", "q3"]
    assert set(remote[0]) == set(local[0]) and set(remote[0]["usage"]) == \
        set(local[0]["usage"])
    for record in remote:
        assert (record["answer"], record["reasoning"]) == (ANSWER, REASONING)
        assert record["model"] == "deepseek-r1:7b" and record["error"] is None
    assert len({body["seed"] for body in bodies}) == 4  # each record's own seed
    assert result.stderr.strip().splitlines()[-1].startswith("batch: 4 done, 0 failed")
    with Store.open(app_paths().db_path) as store:
        saved = store.list_conversations()
        assert len(saved) == 4 and {c.model for c in saved} == {"deepseek-r1:7b"}
        assert store.branch(saved[0].id)[-1].reasoning == REASONING


def test_batch_retries_a_dropped_stream_then_writes_one_error_record(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one\n")
    with StubOpenAI([SHAPES["inline"](drop_after=4), SHAPES["inline"]()]) as stub:
        recovered = localr1("batch", source, "--endpoint", stub.url, "-m", "r1")
        assert len(stub.requests) == 2
    assert recovered.returncode == 0, recovered.stderr
    assert records(recovered.stdout)[0]["answer"] == ANSWER
    with StubOpenAI([SHAPES["inline"](drop_after=4)]) as stub:
        failed = localr1("batch", source, "--endpoint", stub.url, "-m", "r1")
    assert failed.returncode == 1
    (record,) = records(failed.stdout)
    assert record["answer"] is None and "broke mid-answer" in record["error"]
    assert "after 4 tries" in record["error"]
    with StubOpenAI([Status(503)]) as stub:
        busy = localr1("batch", source, "--endpoint", stub.url, "-m", "r1")
    assert "HTTP 503" in records(busy.stdout)[0]["error"]


def test_json_schema_goes_as_response_format(tmp_path):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    source = tmp_path / "in.txt"
    source.write_text("one\n")
    answer = '{"city": "Paris"}'
    with StubOpenAI([reasoning_field_stream("reasoning", REASONING, answer)]) as stub:
        run = localr1("run", "--endpoint", stub.url, "--json-schema", schema_file, "x")
        batch = localr1("batch", source, "--endpoint", stub.url, "--json-schema", schema_file)
        bodies = stub.requests
    assert run.returncode == 0 and json.loads(run.stdout) == {"city": "Paris"}
    assert batch.returncode == 0 and json.loads(records(batch.stdout)[0]["answer"])
    for body in bodies:
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": schema, "strict": True}}
    with Store.open(app_paths().db_path) as store:  # the grammar shaped one turn: not kept
        assert store.conversation(store.latest_conversation_id()).params.get(
            "answer_grammar") is None


def test_chat_with_an_endpoint_that_serves_nothing_is_one_line():
    with StubOpenAI([SHAPES["reasoning"]()], models=[]) as stub:
        result = localr1("chat", "--endpoint", stub.url)
    assert_one_line_error(result, "lists no model; pass --model NAME")


async def test_chat_with_an_endpoint(tmp_path):
    from localr1.config import Settings
    from localr1.tui.app import LocalR1App
    from localr1.tui.prefs import TuiPrefs
    from tests.tui.conftest import SIZE, send, wait_for

    with StubOpenAI([SHAPES["reasoning_content"](usage=USAGE)], models=["r1:14b"]) as stub, \
            Store.open(tmp_path / "history.db") as store:
        engine = RemoteEngine.connect(stub.url)
        app = LocalR1App(store=store, engine=engine, model_label=engine.info.name,
                         settings=Settings(), prefs=TuiPrefs(), paths=app_paths())
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.chat is not None and app.chat.is_mounted,
                           what="the chat screen")
            header = str(app.chat.header.render())
            assert "r1:14b" in header and f"via 127.0.0.1:{stub.url.split(':')[2][:-3]}" \
                in header
            await send(pilot, "hi")
        answer = store.branch(store.latest_conversation_id())[-1]
        assert (answer.model, answer.reasoning, answer.content) == ("r1:14b", REASONING,
                                                                    ANSWER)
        assert answer.finish_reason == "stop"


def test_batch_against_localr1_serve(tmp_path, serve, r1_prefill_model,  # noqa: F811
                                     r1_original_model):
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\nthree\n")
    for model, reasoning_format in ((r1_prefill_model, "both"), (r1_original_model, "inline")):
        local = records(localr1("batch", source, "-m", model).stdout)
        running = serve(model, name="tiny-r1", reasoning_format=reasoning_format)
        result = localr1("batch", source, "--endpoint", f"{running.base_url}/v1",
                         "--parallel", "2", "--seed", "5")
        assert result.returncode == 0, result.stderr
        remote = records(result.stdout)
        assert sorted(r["id"] for r in remote) == [1, 2, 3]
        for record in remote:
            assert (record["reasoning"], record["answer"]) == (REASONING, ANSWER)
            assert record["model"] == "tiny-r1"
            assert record["usage"]["completion_tokens"] == local[0]["usage"][
                "completion_tokens"]
            assert 0 < record["usage"]["reasoning_tokens"] < \
                record["usage"]["completion_tokens"]


def test_batch_that_cannot_write_its_records_fails_in_one_line(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\nthree\n")
    with StubOpenAI([SHAPES["reasoning"]()]) as stub:
        result = localr1("batch", source, "--endpoint", stub.url, "-m", "r1",
                         "--parallel", "2", "-o", "/dev/full")
    assert_one_line_error(result, "/dev/full", "cannot write")


def test_a_json_schema_from_a_pipe_is_read_once(tmp_path):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    with StubOpenAI([reasoning_field_stream("reasoning", REASONING, '{"city": "Rome"}')]) \
            as stub:
        result = subprocess.run(
            ["bash", "-c", f'"$0" -m localr1 run --endpoint {stub.url} '
                           f"--json-schema <(echo '{json.dumps(schema)}') x", sys.executable],
            capture_output=True, text=True, timeout=120)
        bodies = stub.requests
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"city": "Rome"}
    assert bodies[0]["response_format"]["json_schema"]["schema"] == schema
