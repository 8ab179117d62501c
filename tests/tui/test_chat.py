"""Driving `localr1 chat` with Pilot and the scripted R1 models (real llama.cpp, real SQLite)."""

from __future__ import annotations

from localr1.tui.widgets.message_view import AssistantMessage, UserMessage
from tests.fixtures.scripted_models import ANSWER_TEXT, REASONING_TEXT
from tests.tui.conftest import SIZE, markdown_text, press_and_wait_turn, send, wait_for


async def test_send_shows_reasoning_collapsed_answer_rendered_and_saved(make_app, store,
                                                                        prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        chat.prompt.focus()
        await pilot.press(*"hello", "enter")
        await wait_for(pilot, lambda: chat.turns.started == 1 and chat.turn is None, what="turn")
        await pilot.pause()

        assert chat.prompt.text == ""  # sent, so cleared
        user, = chat.log_view.query(UserMessage)
        assert user.text == "hello" and user.message_id is not None
        answer, = chat.log_view.query(AssistantMessage)
        assert answer.reasoning is not None
        assert answer.reasoning.collapsed
        assert answer.reasoning.title.startswith("Thought for ")
        assert markdown_text(answer.answer) == ANSWER_TEXT
        assert markdown_text(answer.reasoning.body) == REASONING_TEXT
        assert answer.answer.segments == 1  # one full render at the end

        # Both are in the store, the answer with its reasoning.
        conversation_id = store.latest_conversation_id()
        messages = store.branch(conversation_id)
        assert [(m.role, m.content) for m in messages] == [("user", "hello"),
                                                           ("assistant", ANSWER_TEXT)]
        assert messages[1].reasoning == REASONING_TEXT
        assert messages[1].finish_reason == "stop"
        assert answer.message_id == messages[1].id

        # The sidebar lists it, the header shows its title, the status line the context.
        assert chat.sidebar.options.get_option(f"c{conversation_id}") is not None
        assert "hello" in str(chat.header.render())
        assert "context " in str(chat.status.render())

        # ctrl+t opens the reasoning, and so does a click on its title.
        await pilot.press("ctrl+t")
        assert not answer.reasoning.collapsed
        await pilot.press("ctrl+t")
        assert answer.reasoning.collapsed
        await pilot.click(answer.reasoning.query_one("CollapsibleTitle"))
        await pilot.pause()
        assert not answer.reasoning.collapsed

        # Multi-line prompts: ctrl+j and shift+enter add lines, nothing is sent.
        chat.prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert chat.prompt.text == "a\nb\nc" and chat.turns.started == 1


async def test_keep_reasoning_open_setting(make_app, prefill_engine):
    from localr1.tui.prefs import TuiPrefs

    app = make_app(engine=prefill_engine, prefs=TuiPrefs(keep_reasoning_open=True))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        answer, = app.chat.log_view.query(AssistantMessage)
        assert answer.reasoning is not None and not answer.reasoning.collapsed
        assert answer.reasoning.title.startswith("Thought for ")


async def test_stop_keeps_the_partial_answer_marked_stopped(make_app, store, r1_loop_model,
                                                            hold_turns):
    held = hold_turns(text="Hmm, let me think")
    app = make_app(model_path=r1_loop_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        chat = app.chat
        chat.prompt.text = "think forever"
        await pilot.press("enter")
        # What is shown is saved at the stop: wait for all the words checked below.
        await wait_for(pilot, lambda: chat.turn is not None
                       and "Hmm, let me think" in chat.turn.widget.reasoning_text,
                       what="reasoning")
        widget = chat.turn.widget
        assert widget.reasoning is not None and not widget.reasoning.collapsed
        assert widget.reasoning.title.startswith("Thinking…")
        await pilot.press("escape")
        held.release()
        await wait_for(pilot, lambda: chat.turn is None, what="the stop")
        await pilot.pause()

        stored = store.branch(store.latest_conversation_id())[-1]
        assert stored.role == "assistant" and stored.finish_reason == "cancelled"
        assert stored.reasoning and stored.reasoning.startswith("Hmm, let me think")
        assert widget.finish_reason == "cancelled"
        assert "stopped" in str(widget.footer.render())
        assert "stopped while thinking" in widget.reasoning.title
        # Old conversations show it the same way.
        await chat.open_conversation(stored.conversation_id)
        await pilot.pause()
        reopened, = chat.log_view.query(AssistantMessage)
        assert reopened.reasoning is not None
        assert "stopped while thinking" in reopened.reasoning.title
        assert "stopped" in str(reopened.footer.render())


async def test_regenerate_and_browse_versions(make_app, store, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "hello")
        await press_and_wait_turn(pilot, "ctrl+r")
        conversation_id = store.latest_conversation_id()
        user, answer = store.branch(conversation_id)
        alternates = store.alternates(answer.id)
        assert len(alternates) == 2 and alternates[-1].id == answer.id
        shown, = chat.log_view.query(AssistantMessage)
        assert shown.message_id == answer.id
        assert "2/2" in str(shown.footer.render())
        assert len(chat.log_view.query(UserMessage)) == 1

        await pilot.press("alt+left")
        await pilot.pause()
        assert store.branch(conversation_id)[-1].id == alternates[0].id
        shown, = chat.log_view.query(AssistantMessage)
        assert shown.message_id == alternates[0].id
        assert "1/2" in str(shown.footer.render())
        await pilot.press("alt+right")
        await pilot.pause()
        assert store.branch(conversation_id)[-1].id == alternates[1].id


async def test_edit_last_message_and_resend(make_app, store, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "first try")
        await pilot.press("up")  # in an empty prompt: edit the last message; esc cancels
        assert chat.editing is not None and chat.prompt.text == "first try"
        await pilot.press("escape")
        assert chat.editing is None and chat.prompt.text == ""
        chat.prompt.text = "a draft I am typing"
        await pilot.press("ctrl+g")
        assert chat.prompt.text == "first try"
        assert chat.query_one("#edit-banner").display
        chat.prompt.text = "second try"
        await press_and_wait_turn(pilot, "enter")

        assert chat.prompt.text == "a draft I am typing"  # the draft comes back
        conversation_id = store.latest_conversation_id()
        branch = store.branch(conversation_id)
        assert [m.content for m in branch] == ["second try", ANSWER_TEXT]
        versions = store.alternates(branch[0].id)
        assert [m.content for m in versions] == ["first try", "second try"]
        user, = chat.log_view.query(UserMessage)
        assert user.text == "second try" and "2/2" in str(user.query_one(".role").render())

        await pilot.press("alt+up")
        await pilot.pause()
        assert [m.content for m in store.branch(conversation_id)][0] == "first try"
        user, = chat.log_view.query(UserMessage)
        assert user.text == "first try"


async def test_copy_answer_and_code_block(make_app, store, prefill_engine):
    conversation = store.create_conversation(model="m")
    store.add_message(conversation.id, "user", "code please")
    store.add_message(conversation.id, "assistant",
                      "Two blocks:\n\n```python\nprint(1)\n```\n\nand\n\n```sh\nls\n```\n")
    app = make_app(engine=prefill_engine, conversation_id=conversation.id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+b")
        assert app.clipboard.startswith("Two blocks:")
        await pilot.press("ctrl+o")
        assert app.clipboard == "ls\n"
        await pilot.press("ctrl+o")
        assert app.clipboard == "print(1)\n"


async def test_new_chat_and_switching_conversations(make_app, store, prefill_engine):
    pasta = store.create_conversation(model="m", title="Cooking pasta")
    store.add_message(pasta.id, "user", "How long do I boil spaghetti?")
    store.add_message(pasta.id, "assistant", "About nine minutes, for carbonara too.")
    python = store.create_conversation(model="m", title="Python tips")
    store.add_message(python.id, "user", "Explain list comprehensions")
    store.add_message(python.id, "assistant", "They build lists from iterables.")

    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        options = chat.sidebar.options
        titles = [str(options.get_option_at_index(i).prompt)
                  for i in range(options.option_count)]
        assert titles == ["Today", "Python tips", "Cooking pasta"]  # newest first

        # Pick a conversation with the keyboard.
        options.focus()
        options.highlighted = options.get_option_index(f"c{pasta.id}")
        await pilot.press("enter")
        await pilot.pause()
        assert chat.conversation is not None and chat.conversation.id == pasta.id
        assert [w.text for w in chat.log_view.query(UserMessage)] == [
            "How long do I boil spaghetti?"]

        # Search: the filter uses the full-text index (message content, not just titles).
        await pilot.press("ctrl+f")
        assert app.focused is chat.query_one("#filter")
        await pilot.press(*"comprehensions")
        await wait_for(pilot, lambda: options.option_count == 2
                       and options.get_option_at_index(1).id == f"c{python.id}",
                       what="search results")
        await pilot.press("enter", "enter")  # into the list, then open the hit
        await pilot.pause()
        assert chat.conversation.id == python.id

        await pilot.press("escape")  # leaves the filter? focus is on the list: no-op
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat.conversation is None
        assert not chat.log_view.query(UserMessage)


async def test_pin_rename_delete_export(make_app, store, prefill_engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = store.create_conversation(model="m", title="Older one")
    store.add_message(older.id, "user", "old")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        await send(pilot, "new one")
        conversation_id = chat.conversation.id

        await pilot.press("f3")  # pin
        assert store.conversation(conversation_id).pinned
        options = chat.sidebar.options
        assert str(options.get_option_at_index(0).prompt) == "Pinned"

        await pilot.press("f2")
        await pilot.pause()
        screen = app.screen
        screen.query_one("Input").value = "Renamed [bold]chat[/bold]"
        await pilot.press("enter")
        await pilot.pause()
        assert store.conversation(conversation_id).title == "Renamed [bold]chat[/bold]"
        assert "Renamed [bold]chat[/bold]" in str(chat.header.render())

        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("enter")  # accept the suggested file in the current folder
        await pilot.pause()
        exported = list(tmp_path.glob("*.md"))
        assert len(exported) == 1
        text = exported[0].read_text()
        assert "# Renamed [bold]chat[/bold]" in text and ANSWER_TEXT in text
        assert REASONING_TEXT in text

        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("n")  # cancel
        await pilot.pause()
        assert store.conversation(conversation_id)
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert store.latest_conversation_id() == older.id
        assert chat.conversation is None


async def test_command_palette_runs_actions(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        commands = {c.title for c in app.get_system_commands(app.chat)}
        assert {"New chat", "Stop generating", "Regenerate", "Edit last message",
                "Copy answer", "Rename conversation", "Pin or unpin conversation",
                "Delete conversation", "Export to Markdown", "Search history",
                "Previous answer version", "Models", "Conversation settings"} <= commands
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"regenerate")
        await pilot.pause(0.3)
        await press_and_wait_turn(pilot, "enter")
        assert len(app.store.alternates(app.chat._last_answer().message_id)) == 2


async def test_sidebar_reads_a_page_at_a_time(make_app, store, prefill_engine):
    from localr1.tui.widgets.sidebar import PAGE_SIZE

    for i in range(PAGE_SIZE + 5):
        store.create_conversation(model="m", title=f"Conversation {i}")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        options = app.chat.sidebar.options
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert sum(1 for i in ids if i and i.startswith("c")) == PAGE_SIZE
        assert ids[-1] == "more"
        options.focus()
        options.highlighted = options.option_count - 1
        await pilot.press("enter")
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert sum(1 for i in ids if i and i.startswith("c")) == PAGE_SIZE + 5
        assert "more" not in ids
