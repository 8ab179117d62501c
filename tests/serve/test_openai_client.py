"""The OpenAI client against `serve` on the scripted R1 models: the reasoning in both fields,
usage, streaming and not, the per-request controls."""

from __future__ import annotations

import json

from tests.fixtures import scripted_models as sm

HI = [{"role": "user", "content": "hi"}]


def test_not_streaming_splits_reasoning_into_both_fields(serve, r1_prefill_model):
    running = serve(r1_prefill_model)
    reply = running.client().chat.completions.create(model=r1_prefill_model.stem, messages=HI)
    message = reply.choices[0].message
    assert message.content == sm.ANSWER_TEXT
    extra = message.model_extra
    assert extra["reasoning_content"] == sm.REASONING_TEXT
    assert extra["reasoning"] == sm.REASONING_TEXT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == r1_prefill_model.stem
    usage = reply.usage
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.completion_tokens > usage.completion_tokens_details.reasoning_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_sends_reasoning_then_answer_then_usage(serve, r1_original_model):
    running = serve(r1_original_model)
    stream = running.client().chat.completions.create(
        model=r1_original_model.stem, messages=HI, stream=True,
        stream_options={"include_usage": True})
    reasoning, answer, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        if extra.get("reasoning_content"):
            assert extra["reasoning"] == extra["reasoning_content"]
            assert not answer  # the reasoning comes first
            reasoning += extra["reasoning_content"]
        answer += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (reasoning, answer, finish) == (sm.REASONING_TEXT, sm.ANSWER_TEXT, "stop")
    assert usage.completion_tokens_details.reasoning_tokens > 0


def test_reasoning_effort_none_answers_without_thinking(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    reply = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI,
                                           reasoning_effort="none")
    extra = reply.choices[0].message.model_extra
    assert not extra.get("reasoning_content")
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    # chat_template_kwargs' thinking switch does the same
    reply = client.chat.completions.create(
        model=r1_prefill_model.stem, messages=HI,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0


def test_max_tokens_ends_with_length(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    reply = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI,
                                           max_completion_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_stop_string_ends_the_answer_before_it(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    reply = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI,
                                           stop=["How may"])
    assert reply.choices[0].message.content == "Hello! "  # all before it, as OpenAI does
    assert reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI,
                                            stop="may I", stream=True)
    answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert answer == "Hello! How "


def test_inline_reasoning_format_keeps_think_tags_in_content(serve, r1_prefill_model):
    client = serve(r1_prefill_model, reasoning_format="inline").client()
    reply = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI)
    content = reply.choices[0].message.content
    assert content == f"<think>\n{sm.REASONING_TEXT}\n</think>\n\n{sm.ANSWER_TEXT}"
    assert "reasoning_content" not in (reply.choices[0].message.model_extra or {})
    stream = client.chat.completions.create(model=r1_prefill_model.stem, messages=HI,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == content


def test_json_object_answer_parses_after_free_reasoning(serve, r1_prefill_model):
    client = serve(r1_prefill_model).client()
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}},
              "required": ["ok"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=r1_prefill_model.stem, messages=HI, max_tokens=200, seed=1,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "answer", "schema": schema}})
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] == sm.REASONING_TEXT  # reasoned freely
    assert reply.choices[0].finish_reason == "stop"
    assert set(json.loads(message.content)) == {"ok"}
