"""The parallel decoder as the server drives it: requests put while it decodes, a request
cancelled on its own, and an answer grammar that waits for </think>."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.answer_format import json_schema_grammar
from localr1.engine.events import (
    AnswerDelta,
    GenerationParams,
    ReasoningDelta,
    TurnDone,
)
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.parallel_decoder import (
    GrammarError,
    ParallelDecoder,
    RequestFeed,
    SequenceRequest,
    check_grammar,
)
from tests.fixtures import scripted_models as sm

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
          "additionalProperties": False}


class Collector:
    """The decoder's sink: each request's events, and a hook run on each event."""

    def __init__(self) -> None:
        self.events: dict[str, list] = {}
        self.done: list[str] = []
        self.on_event = lambda key, event: None

    def __call__(self, key: str, event) -> None:
        self.events.setdefault(key, []).append(event)
        if isinstance(event, TurnDone):
            self.done.append(key)
        self.on_event(key, event)

    def text(self, key: str, kind: type) -> str:
        return "".join(e.text for e in self.events[key] if isinstance(e, kind))

    def stats(self, key: str):
        return next(e.stats for e in self.events[key] if isinstance(e, TurnDone))


def _request(engine: Engine, key: str, n_ctx: int, **params) -> SequenceRequest:
    generation = replace(GenerationParams(), **params)
    prompt = engine.prepare_prompt([ChatMessage("user", "hi")], generation, n_ctx=n_ctx)
    return SequenceRequest(key=key, prompt=prompt, params=generation)


@pytest.fixture(scope="module")
def loop_engine(r1_loop_model):
    with Engine.load(EngineConfig(r1_loop_model, context_size=512)) as engine:
        yield engine


@contextlib.contextmanager
def _running(decoder: ParallelDecoder, feed: RequestFeed, sink) -> Iterator[threading.Thread]:
    """decoder.run(feed) in a thread, always ended (feed closed, thread joined) before the
    decoder is freed, even when an assertion fails on the way."""
    thread = threading.Thread(target=decoder.run, args=(feed, sink))
    thread.start()
    try:
        yield thread
    finally:
        feed.close()
        thread.join(120)


def test_a_request_put_while_decoding_joins_and_finishes_first(loop_engine):
    sink = Collector()
    feed = RequestFeed()
    long_started = threading.Event()
    sink.on_event = lambda key, event: long_started.set() if key == "long" else None
    with ParallelDecoder(loop_engine, 2, 512, threads=2) as decoder, \
            _running(decoder, feed, sink) as thread:
        feed.put(_request(loop_engine, "long", 512, max_tokens=300))
        assert long_started.wait(60)  # "long" is decoding: "short" arrives mid-decode
        feed.put(_request(loop_engine, "short", 512, max_tokens=5))
    assert not thread.is_alive()  # close ends the run once the requests finished
    assert sink.done == ["short", "long"]
    assert sink.stats("short").completion_tokens == 5
    assert sink.stats("long").completion_tokens == 300


def test_one_request_cancelled_frees_its_slot_at_the_next_step(loop_engine):
    sink = Collector()
    feed = RequestFeed()
    gone = threading.Event()

    def on_event(key, event) -> None:  # the client goes away after its third delta
        if key == "gone" and len(sink.events[key]) == 3:
            gone.set()

    sink.on_event = on_event
    generation = GenerationParams(max_tokens=400)
    prompt = loop_engine.prepare_prompt([ChatMessage("user", "hi")], generation, n_ctx=512)
    with ParallelDecoder(loop_engine, 2, 512, threads=2) as decoder, \
            _running(decoder, feed, sink):
        feed.put(SequenceRequest("gone", prompt, generation, cancel=gone))
        feed.put(_request(loop_engine, "stays", 512, max_tokens=100))
    assert sink.stats("gone").finish_reason == "cancelled"
    assert sink.stats("gone").completion_tokens <= 4  # freed within a token
    assert sink.stats("stays").finish_reason == "length"
    assert sink.stats("stays").completion_tokens == 100


def test_a_request_cancelled_before_it_starts_is_never_decoded(loop_engine):
    sink = Collector()
    cancelled = threading.Event()
    cancelled.set()
    generation = GenerationParams(max_tokens=50)
    prompt = loop_engine.prepare_prompt([ChatMessage("user", "hi")], generation, n_ctx=512)
    with ParallelDecoder(loop_engine, 1, 512, threads=2) as decoder:
        decoder.run([SequenceRequest("x", prompt, generation, cancel=cancelled)], sink)
    assert sink.stats("x").finish_reason == "cancelled"
    assert sink.stats("x").completion_tokens == 0


@pytest.mark.parametrize("budget", [-1, 0])
def test_the_answer_grammar_applies_after_the_think_block(r1_prefill_model, budget):
    sink = Collector()
    grammar = json_schema_grammar(SCHEMA)
    with Engine.load(EngineConfig(r1_prefill_model, context_size=512)) as engine, \
            ParallelDecoder(engine, 2, 512, threads=2) as decoder:
        requests = [_request(engine, key, 512, answer_grammar=grammar, max_tokens=200,
                             reasoning_budget=budget, seed=seed)
                    for key, seed in (("a", 1), ("b", 2))]
        decoder.run(requests, sink)
    for key in ("a", "b"):
        expected_reasoning = sm.REASONING_TEXT if budget else ""
        assert sink.text(key, ReasoningDelta) == expected_reasoning  # free reasoning
        assert json.loads(sink.text(key, AnswerDelta)).keys() == {"ok"}
        assert sink.stats(key).finish_reason == "stop"


def test_a_model_without_think_block_follows_the_grammar_from_its_first_token(smollm2_model):
    sink = Collector()
    with Engine.load(EngineConfig(smollm2_model, context_size=512)) as engine, \
            ParallelDecoder(engine, 1, 512, threads=2) as decoder:
        request = _request(engine, "a", 512, answer_grammar=json_schema_grammar(SCHEMA),
                           max_tokens=40, temperature=0)
        decoder.run([request], sink)
    assert json.loads(sink.text("a", AnswerDelta)).keys() == {"ok"}


def test_a_grammar_llama_cpp_cannot_parse_is_refused_up_front(r1_prefill_model):
    with Engine.load(EngineConfig(r1_prefill_model, context_size=512)) as engine:
        check_grammar(engine, json_schema_grammar(SCHEMA))
        with pytest.raises(GrammarError):
            check_grammar(engine, "root ::= nothing-defined")
