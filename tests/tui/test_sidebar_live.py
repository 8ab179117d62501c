"""The sidebar and the open conversation follow the store: a new chat is listed when its first
message is sent, turns added by `localr1 run --cid N` in another terminal show up; the search
box keeps what is typed right after ctrl+u; Esc closes the search results; leaving the models
screen puts the focus back on the prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from textual import events
from textual.widgets import Input

from localr1.store import Store
from localr1.store.writer import AssistantMessageWriter
from localr1.tui.messages import StoreCheckDue
from localr1.tui.screens.models import ModelsScreen
from localr1.tui.widgets.message_view import (
    STILL_WRITING_NOTE,
    AssistantMessage,
    UserMessage,
    being_written,
)
from tests.tui.conftest import SIZE, send, wait_for


async def test_a_new_chat_is_listed_as_soon_as_its_first_message_is_sent(make_app, store: Store,
                                                                         r1_loop_model,
                                                                         hold_turns):
    held = hold_turns()  # the turn thinks until the end of the test
    app = make_app(model_path=r1_loop_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        chat = app.chat
        chat.prompt.text = "think forever please"
        await pilot.press("enter")
        await wait_for(pilot, held.reached.is_set, what="the thinking")
        assert chat.turn is not None
        conversation_id = store.latest_conversation_id()
        assert conversation_id is not None
        option = chat.sidebar.options.get_option(f"c{conversation_id}")  # while it thinks
        assert "think forever please" in str(option.prompt)
        assert chat.sidebar.options.highlighted == \
            chat.sidebar.options.get_option_index(f"c{conversation_id}")
        await pilot.press("escape")
        held.release()
        await wait_for(pilot, lambda: chat.turn is None, what="the stop")
        assert store.conversation(conversation_id).title == "think forever please"


async def test_turns_added_from_another_terminal_show_up(make_app, store: Store,
                                                         prefill_engine, r1_prefill_model: Path):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()
        env = {**os.environ, "LOCALR1_DB": str(store.path)}
        result = subprocess.run([sys.executable, "-m", "localr1", "run", "-m",
                                 str(r1_prefill_model), "--cid", str(conversation_id),
                                 "from the other terminal"],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        await wait_for(pilot, lambda: [w.text for w in chat.log_view.query(UserMessage)] ==
                       ["hello", "from the other terminal"], timeout=30,
                       what="the other terminal's turn")
        assert chat.conversation.message_count == 4


async def test_typing_right_after_ctrl_u_in_the_search_box_is_kept(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f", *"hel")
        search = app.chat.query_one("#filter", Input)
        assert search.value == "hel"
        # As a terminal delivers them: in one read, nothing waits between the keys.
        for key, character in (("ctrl+u", "\x15"), ("h", "h"), ("e", "e")):
            app.post_message(events.Key(key, character))
        await wait_for(pilot, lambda: search.value == "he", timeout=5,
                       what="'he' in the search box")


async def test_escape_closes_the_search_results_first(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        await send(pilot, "something else")
        await pilot.press("ctrl+f", *"hello", "enter")  # enter: into the results
        sidebar = chat.sidebar
        await wait_for(pilot, lambda: sidebar.options.option_count and "found" in
                       str(sidebar.options.get_option_at_index(0).prompt), what="results")
        assert app.focused is sidebar.options
        await pilot.press("escape")
        assert sidebar.query_one("#filter", Input).value == ""
        assert not sidebar.searching
        assert app.focused is chat.prompt
        await wait_for(pilot, lambda: "Today" in str(sidebar.options.get_option_at_index(0)
                                                     .prompt), what="the list again")


async def test_escape_from_the_models_screen_focuses_the_prompt(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        await pilot.press("ctrl+f", *"hello", "enter")
        await wait_for(pilot, lambda: app.focused is chat.sidebar.options, what="results")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen), what="models")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat, what="the chat")
        await pilot.pause()
        assert app.focused is chat.prompt
        await pilot.press(*"typed")
        assert chat.prompt.text == "typed"


async def test_an_answer_another_program_is_writing_grows_and_says_so(make_app, store: Store,
                                                                      prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()
        # Another program (`localr1 run --cid N`) answers: its row exists from the first
        # token ('incomplete'), and later flushes change only its text.
        question = store.add_message(conversation_id, "user", "from elsewhere")
        writer = AssistantMessageWriter(store, conversation_id, question.id, "r1",
                                        flush_interval=3600)

        async def shown_after_a_check(text: str) -> AssistantMessage:
            chat.post_message(StoreCheckDue())
            await wait_for(pilot, lambda: (answer := chat.log_view.last_answer()) is not None
                           and answer.answer_text == text, timeout=10, what=repr(text))
            await pilot.pause()
            answer = chat.log_view.last_answer()
            assert answer is not None
            return answer

        writer.add("answer", "First")
        answer = await shown_after_a_check("First")
        assert STILL_WRITING_NOTE in str(answer.footer.render())
        assert "interrupted" not in str(answer.footer.render())
        writer.add("answer", " and more")
        writer.flush()
        await shown_after_a_check("First and more")
        writer.finish("stop")
        answer = await shown_after_a_check("First and more")
        assert STILL_WRITING_NOTE not in str(answer.footer.render())


def test_an_old_unfinished_answer_reads_as_interrupted(store: Store):
    conversation = store.create_conversation(model="r1")
    message = store.add_message(conversation.id, "assistant", "cut", finish_reason="incomplete")
    created = datetime.fromisoformat(message.created_at)
    assert being_written(message, now=created + timedelta(seconds=5))
    assert not being_written(message, now=created + timedelta(hours=2))


async def test_a_conversation_deleted_by_another_program_closes_with_a_note(
        make_app, store: Store, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()
        store.delete_conversation(conversation_id)  # `localr1 history rm` elsewhere
        chat.post_message(StoreCheckDue())
        await wait_for(pilot, lambda: chat.conversation is None, timeout=10,
                       what="a new chat")
        assert any("deleted by another program" in str(n.message) for n in app._notifications)
        assert chat.log_view.last_answer() is None
        assert app.is_running
