"""What stays under a turn that did not end normally: a message too long for the context says
why and what to do in the app's terms (never CLI flags), a turn the engine stopped for
repeating itself says so, both live and after the conversation is reopened; and "answer now"
ends a running turn's thinking."""

from __future__ import annotations

from pathlib import Path

import pytest

from localr1.engine.events import ReasoningDelta
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.errors import ChatFormatError
from localr1.store.transfer import export_conversation, import_conversations
from localr1.tui.turn_errors import (
    CHAT_FORMAT_FIX,
    TURN_ERRORS,
    context_overflow_text,
    turn_error,
    turn_error_text,
)
from localr1.tui.widgets.message_view import REPETITION_NOTE, AssistantMessage
from tests.fixtures.scripted_models import build_scripted_model
from tests.tui.conftest import SIZE, send, wait_for, wait_ready

LONG_PASTE = "This pasted report goes on and on. " * 900  # ~8k tokens: over a 4k context


def footer_text(answer: AssistantMessage) -> str:
    return str(answer.footer.render())


def last_answer(app) -> AssistantMessage:
    answer = app.chat.log_view.last_answer()
    assert answer is not None
    return answer


async def test_a_paste_longer_than_the_context_says_why_and_what_to_do_in_the_app(
        make_app, store, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await send(pilot, LONG_PASTE)
        answer = last_answer(app)
        await wait_for(pilot, lambda: "too long" in footer_text(answer), what="the reason")
        text = footer_text(answer)
        # The context is already this model's maximum: a shorter paste or another model.
        assert "needs 8," in text and "4,096 (this model's maximum)" in text
        assert "shorter" in text and "ctrl+l" in text
        assert "--" not in text and "ended by an error" not in text
        # The pop-up says the same, in the same words.
        shown = [str(n.message) for n in app._notifications]
        assert any("too long for the context" in m for m in shown)
        assert not any("--ctx" in m or "--max-tokens" in m for m in shown)
        conversation_id = app.chat.conversation.id

    # The reason is kept: a new app on the same store shows it under the failed answer.
    messages = store.branch(conversation_id)
    assert messages[-1].finish_reason == "error" and messages[-1].content == ""
    again = make_app(engine=prefill_engine, conversation_id=conversation_id)
    async with again.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        answer = last_answer(again)
        await wait_for(pilot, lambda: "too long" in footer_text(answer), what="the reason")
        assert "this model's maximum" in footer_text(answer)


async def test_with_room_to_grow_the_advice_names_the_f4_setting(make_app, r1_prefill_model):
    engine = Engine.load(EngineConfig(r1_prefill_model, context_size=1024, gpu_layers=0))
    try:
        app = make_app(engine=engine)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "This pasted report goes on and on. " * 200)  # ~1.8k tokens
            answer = last_answer(app)
            await wait_for(pilot, lambda: "too long" in footer_text(answer), what="the reason")
            text = footer_text(answer)
            assert "raise Context size in F4 (up to 4,096)" in text and "--" not in text
    finally:
        engine.close()


def test_the_advice_offers_only_what_can_work():
    # The context is already the model's maximum: no "raise the context".
    at_max = context_overflow_text(9000, 4096, 1024, 4096, 0)
    assert "maximum" in at_max and "Context size" not in at_max
    assert "shorter" in at_max and "ctrl+l" in at_max
    assert "Max tokens" not in at_max  # the message alone is over 4,096: no reserve helps
    # A model that takes more: raise it in F4, up to its maximum.
    below = context_overflow_text(3500, 4096, 1024, 131072, 0)
    assert "raise Context size in F4 (up to 131,072)" in below
    assert "Max tokens" in below  # 3,500 would fit with a smaller reply reserve
    assert "--" not in at_max + below


async def test_a_failed_answer_without_a_kept_reason_says_it_ended_by_an_error(
        make_app, store, prefill_engine):
    conversation = store.create_conversation(model="r1")
    store.add_message(conversation.id, "user", "hello")
    failed = store.add_message(conversation.id, "assistant", "", finish_reason="error")
    assert turn_error(store.conversation(conversation.id), failed.id) is None
    assert turn_error(None, failed.id) is None
    app = make_app(engine=prefill_engine, conversation_id=conversation.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await wait_for(pilot, lambda: app.chat.log_view.last_answer() is not None,
                       what="the answer")
        await pilot.pause()
        assert footer_text(last_answer(app)) == "⚠ ended by an error"


@pytest.mark.parametrize("error", [
    ChatFormatError("the chat template failed: 'foo' is undefined; try --chat-format NAME"),
    ChatFormatError("tiny has no chat template and its prompt format cannot be inferred "
                    "(architecture x); pass --chat-format NAME, one of: chatml, llama-3"),
    ChatFormatError("the chat template is broken"),
])
def test_prompt_format_errors_name_the_config_file_not_a_cli_option(error):
    text = turn_error_text(error, None, 0)
    assert "--chat-format" not in text
    assert CHAT_FORMAT_FIX in text and "chat_format in config.toml" in CHAT_FORMAT_FIX
    assert text.startswith(str(error).split(";")[0])  # the reason stays


def test_kept_reasons_follow_their_answers_through_export_and_import(store):
    conversation = store.create_conversation(model="r1")
    store.add_message(conversation.id, "user", "hello")
    failed = store.add_message(conversation.id, "assistant", "", finish_reason="error")
    store.update_settings(conversation.id, {TURN_ERRORS: {str(failed.id): "too long",
                                                          "999999": "someone else's"}})
    exported = export_conversation(store, conversation.id)
    store.delete_conversation(conversation.id)
    store.add_message(store.create_conversation(model="r1").id, "user", "takes the old ids")
    imported_id, = import_conversations(store, exported)
    imported = store.conversation(imported_id)
    answer = store.branch(imported_id)[-1]
    assert answer.id != failed.id
    assert imported.params[TURN_ERRORS] == {str(answer.id): "too long"}
    assert turn_error(imported, answer.id) == "too long"


@pytest.fixture(scope="module")
def answer_repeat_engine(tmp_path_factory: pytest.TempPathFactory):
    path = build_scripted_model(tmp_path_factory.mktemp("repeat") / "repeat.F16.gguf",
                                "answer_repeat")
    engine = Engine.load(EngineConfig(path, context_size=4096, gpu_layers=0))
    yield engine
    engine.close()


async def test_a_turn_stopped_for_repeating_itself_says_so_live_and_after_reopening(
        make_app, store, answer_repeat_engine):
    app = make_app(engine=answer_repeat_engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await send(pilot, "What is 2+2?")
        answer = last_answer(app)
        assert answer.finish_reason == "repetition"
        assert REPETITION_NOTE in footer_text(answer)
        assert "kept repeating itself" in REPETITION_NOTE
        assert "Two plus two?" in answer.answer_text  # what was written stays
        conversation_id = app.chat.conversation.id
    assert store.branch(conversation_id)[-1].finish_reason == "repetition"
    again = make_app(engine=answer_repeat_engine, conversation_id=conversation_id)
    async with again.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await wait_for(pilot, lambda: again.chat.log_view.last_answer() is not None,
                       what="the answer")
        answer = last_answer(again)
        await pilot.pause()
        assert REPETITION_NOTE in footer_text(answer)


@pytest.fixture(scope="module")
def thinking_engine(r1_loop_model: Path):
    engine = Engine.load(EngineConfig(r1_loop_model, context_size=512, gpu_layers=0))
    yield engine
    engine.close()


async def test_answer_now_ends_the_thinking_of_the_running_turn(make_app, store,
                                                                thinking_engine, hold_turns):
    """The loop model would think until its context is full; answer_now closes the think
    block and the turn goes on to an answer (stopped here once it starts: this model's answer
    is its loop again)."""
    held = hold_turns(ReasoningDelta)
    app = make_app(engine=thinking_engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        chat = app.chat
        assert not chat.turns.answer_now()  # no turn: nothing to do
        chat.prompt.focus()
        chat.prompt.text = "think about it"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.turn is not None
                       and chat.turn.widget.reasoning_text, what="the thinking")
        assert chat.turns.answer_now()
        assert not chat.turns.answer_now()  # asked once
        held.release()
        await wait_for(pilot, lambda: chat.turn is None or chat.turn.widget.answer_text,
                       what="the answer")
        chat.turns.stop()
        await wait_for(pilot, lambda: chat.turn is None, what="the turn to end")
        await pilot.pause()
        stored = store.branch(chat.conversation.id)[-1]
        assert stored.role == "assistant" and stored.reasoning
        assert stored.content.strip()  # it answered: without answer_now it would still think
