"""Answer now: an event set while the model thinks ends the think block at once and the model
answers (TurnStats.answered_early), through the Engine and ChatSession."""

from __future__ import annotations

import threading

import pytest

from localr1.chat_message import ChatMessage
from localr1.chat_session import ChatSession, TurnSaved
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm

HI = [ChatMessage("user", "hi")]


@pytest.fixture(scope="module")
def prefill_engine(r1_prefill_model):
    with Engine.load(EngineConfig(r1_prefill_model, context_size=1024)) as engine:
        yield engine


@pytest.fixture(scope="module")
def loop_engine(r1_loop_model):
    with Engine.load(EngineConfig(r1_loop_model)) as engine:
        yield engine


def answer_after_first_thought(events, answer_now: threading.Event):
    """Consume a turn's events, setting `answer_now` at its first ReasoningDelta."""
    reasoning = answer = ""
    stats = saved = None
    for event in events:
        if isinstance(event, ReasoningDelta):
            reasoning += event.text
            answer_now.set()
        elif isinstance(event, AnswerDelta):
            answer += event.text
        elif isinstance(event, TurnDone):
            stats = event.stats
        elif isinstance(event, TurnSaved):
            saved = event
    return reasoning, answer, stats, saved


def test_answer_now_ends_the_thinking_and_the_model_answers(prefill_engine):
    answer_now = threading.Event()
    reasoning, answer, stats, _ = answer_after_first_thought(
        prefill_engine.stream_chat(HI, GenerationParams(seed=1), answer_now=answer_now),
        answer_now)
    assert stats.answered_early and not stats.reasoning_budget_hit
    assert reasoning == "The"  # one reasoning token, then the injected </think>
    assert answer == sm.ANSWER_TEXT
    assert stats.finish_reason == "stop" and not stats.reasoning_truncated
    assert stats.reasoning_tokens == 1


def test_answer_now_on_a_model_that_would_think_forever(loop_engine):
    answer_now = threading.Event()
    reasoning, answer, stats, _ = answer_after_first_thought(
        loop_engine.stream_chat(HI, GenerationParams(max_tokens=40), answer_now=answer_now),
        answer_now)
    assert stats.answered_early and answer  # it answers (whatever this script says)
    assert reasoning == "Hmm" and not stats.reasoning_truncated


def test_answer_now_set_before_the_turn_skips_thinking(prefill_engine):
    answer_now = threading.Event()
    answer_now.set()
    events = list(prefill_engine.stream_chat(HI, GenerationParams(), answer_now=answer_now))
    assert not any(isinstance(e, ReasoningDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == sm.ANSWER_TEXT
    assert events[-1].stats.answered_early


def test_answer_now_after_the_thinking_changes_nothing(prefill_engine):
    answer_now = threading.Event()
    answer = ""
    for event in prefill_engine.stream_chat(HI, GenerationParams(), answer_now=answer_now):
        if isinstance(event, AnswerDelta):
            answer += event.text
            answer_now.set()
        elif isinstance(event, TurnDone):
            stats = event.stats
    assert answer == sm.ANSWER_TEXT and not stats.answered_early


def test_answer_now_from_another_thread(loop_engine):
    # As the TUI does it: the key press sets the event on the event loop's thread. The
    # consumer waits until it is set before asking for more, so no timing is involved.
    answer_now = threading.Event()
    first_thought = threading.Event()

    def press_the_key():
        assert first_thought.wait(60)
        answer_now.set()

    presser = threading.Thread(target=press_the_key)
    presser.start()
    reasoning = answer = ""
    for event in loop_engine.stream_chat(HI, GenerationParams(max_tokens=200),
                                         answer_now=answer_now):
        if isinstance(event, ReasoningDelta):
            reasoning += event.text
            first_thought.set()
            assert answer_now.wait(60)
        elif isinstance(event, AnswerDelta):
            answer += event.text
        elif isinstance(event, TurnDone):
            stats = event.stats
    presser.join()
    assert stats.answered_early and answer
    assert reasoning == "Hmm" and stats.reasoning_tokens == 1  # the key's token, not more


@pytest.mark.parametrize("how", ["send", "regenerate"])
def test_chat_session_passes_answer_now_and_saves_the_answer(prefill_engine, how):
    with Store.open(app_paths().db_path) as store:
        session = ChatSession(store, prefill_engine, "tiny-r1")
        conversation = session.new_conversation()
        answer_now = threading.Event()
        if how == "send":
            events = session.send(conversation.id, "hi", GenerationParams(),
                                  answer_now=answer_now)
        else:
            user = store.add_message(conversation.id, "user", "hi")
            events = session.regenerate(conversation.id, user.id, GenerationParams(),
                                        answer_now=answer_now)
        reasoning, answer, stats, saved = answer_after_first_thought(events, answer_now)
        assert stats.answered_early and answer == sm.ANSWER_TEXT
        stored = store.branch(conversation.id)[-1]
        assert stored.id == saved.assistant_message_id
        assert stored.content == sm.ANSWER_TEXT and stored.reasoning == reasoning == "The"
        assert stored.finish_reason == "stop"
