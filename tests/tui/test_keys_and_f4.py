"""Keys and F4: "answer now" (F5) while the model thinks, the reasoning effort and the
context in use in F4, the command palette without duplicates, and a 60x20 terminal."""

from __future__ import annotations

from textual.command import CommandList
from textual.containers import VerticalScroll
from textual.widgets import Input, Select, Static
from textual.widgets._footer import FooterKey

from localr1.config import Settings
from localr1.engine.events import AnswerDelta, ReasoningDelta
from localr1.store import Store
from localr1.tui.screens.settings import SettingsScreen
from tests.tui.conftest import SIZE, send, wait_for


def footer_actions(screen) -> list[str]:
    return [key.action for key in screen.query(FooterKey)]


def footer_cut_off(screen) -> list[str]:
    """The footer keys cut off by the terminal's edge or hidden under the palette key."""
    keys = list(screen.query(FooterKey))
    palette, = (key for key in keys if key.action == "command_palette")
    return [key.action for key in keys if key is not palette and
            (key.region.right > palette.region.x or key.region.width == 0)] + \
        (["command_palette"] if palette.region.right > screen.size.width else [])


async def test_f5_ends_the_thinking_and_the_model_answers(make_app, store: Store,
                                                         r1_loop_model, hold_turns):
    held = hold_turns(ReasoningDelta, "Hmm, let me think")
    app = make_app(model_path=r1_loop_model, settings=Settings(gpu_layers=0, max_tokens=200))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        chat = app.chat
        assert "answer_now" not in footer_actions(chat)  # idle: no footer key offers it
        chat.prompt.text = "think forever"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.turn is not None
                       and "Hmm, let me think" in chat.turn.widget.reasoning_text,
                       what="reasoning")
        # The footer offers it while the model thinks.
        await wait_for(pilot, lambda: "answer_now" in footer_actions(chat),
                       what="answer now in the footer")
        await pilot.pause()
        assert footer_cut_off(chat) == []  # keys that wait for the turn make room
        assert "regenerate" not in footer_actions(chat)
        widget = chat.turn.widget
        # While it thinks, ctrl+e is still the prompt's "end of line".
        chat.prompt.text = "the next question"
        chat.prompt.move_cursor((0, 0))
        await pilot.press("ctrl+e")
        assert chat.prompt.cursor_location == (0, len("the next question"))
        assert not chat.turn.answer_now.is_set()
        await pilot.press("f5")
        assert chat.turn.answer_now.is_set()
        held.release()
        await wait_for(pilot, lambda: chat.turn is None, what="the turn to end")
        await pilot.pause()

        stored = store.branch(store.latest_conversation_id())[-1]
        assert stored.role == "assistant" and stored.finish_reason != "cancelled"
        assert stored.reasoning and stored.reasoning.startswith("Hmm, let me think")
        assert stored.content  # it answered
        assert widget.answer_text == stored.content
        await wait_for(pilot, lambda: "answer_now" not in footer_actions(chat),
                       what="answer now to leave the footer")


async def test_f4_reasoning_effort_is_saved_and_a_typed_budget_is_custom(make_app, store: Store,
                                                                         prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()

        async def open_f4() -> SettingsScreen:
            await pilot.press("f4")
            await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
            return app.screen

        screen = await open_f4()
        assert app.focused is screen.query_one("#temperature", Input)
        effort = screen.query_one("#reasoning_effort", Select)
        budget = screen.query_one("#reasoning_budget", Input)
        assert (effort.value, budget.value) == ("high", "-1")  # the default: unlimited
        effort.value = "low"
        await pilot.pause()
        assert budget.value == "1024"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")
        assert store.conversation(conversation_id).params["reasoning_budget"] == 1024
        assert app.chat.conv_settings.reasoning_effort == "low"

        screen = await open_f4()
        effort = screen.query_one("#reasoning_effort", Select)
        budget = screen.query_one("#reasoning_budget", Input)
        assert effort.value == "low"
        budget.value = "300"
        await pilot.pause()
        assert effort.value == "custom"
        effort.value = "none"
        await pilot.pause()
        assert budget.value == "0"
        budget.value = "300"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")
        assert store.conversation(conversation_id).params["reasoning_budget"] == 300

        screen = await open_f4()
        assert screen.query_one("#reasoning_effort", Select).value == "custom"
        await pilot.pause()
        # A kept custom budget leaves the focus on the first field; picking "custom" moves
        # it to the budget box.
        assert app.focused is screen.query_one("#temperature", Input)
        screen.query_one("#reasoning_effort", Select).value = "low"
        await pilot.pause()
        screen.query_one("#reasoning_effort", Select).value = "custom"
        await pilot.pause()
        assert app.focused is screen.query_one("#reasoning_budget", Input)


async def test_f4_says_the_context_in_use_when_it_differs(make_app, prefill_engine):
    assert prefill_engine.info.n_ctx == 4096
    app = make_app(engine=prefill_engine, settings=Settings(gpu_layers=0, context_size=8192))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
        screen = app.screen
        assert screen.query_one("#context_size", Input).value == "8192"
        note = str(screen.query_one("#context_in_use", Static).render())
        assert "4,096" in note
        shown = " ".join(str(widget.render()) for widget in screen.query(Static))
        assert "for now" not in shown
        await pilot.press("escape")

    same = make_app(engine=prefill_engine, settings=Settings(gpu_layers=0, context_size=4096))
    async with same.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(same.screen, SettingsScreen), what="F4")
        assert not same.screen.query("#context_in_use")  # nothing to say


async def test_the_command_palette_lists_each_action_once(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: app.screen.query(CommandList)
                       and app.screen.query_one(CommandList).option_count > 10,
                       what="the palette")
        commands = app.screen.query_one(CommandList)
        titles = [str(commands.get_option_at_index(i).prompt).split("\n")[0]
                  for i in range(commands.option_count)]
        assert len(titles) == len(set(titles)), titles
        assert "Keys" in titles and "Answer now" in titles


async def test_footer_and_f4_fit_a_60x20_terminal(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=(60, 20)) as pilot:
        chat = app.chat
        await pilot.pause()
        shown = footer_actions(chat)
        assert {"new_chat", "settings", "models", "help", "command_palette"} <= set(shown)
        assert footer_cut_off(chat) == []
        # Wide again: every footer key comes back.
        for width in (70, 80, 90, 99, 100, 105, 110, 120):
            await pilot.resize_terminal(width, 30)
            await pilot.pause()
            assert footer_cut_off(chat) == [], width
        assert "copy_answer" in footer_actions(chat)  # wide again: every key comes back
        await pilot.resize_terminal(60, 20)
        await pilot.pause()

        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
        await pilot.pause()
        screen = app.screen
        box = screen.query_one(VerticalScroll)
        assert box.outer_size.height <= 20 and box.outer_size.width <= 60
        # Every field can be reached: the dialog scrolls to the buttons.
        save = screen.query_one("#save")
        box.scroll_to_widget(save, animate=False)
        await pilot.pause()
        assert box.region.contains_region(save.region)


async def test_answer_now_leaves_the_footer_as_soon_as_the_answer_starts(make_app,
                                                                        prefill_engine,
                                                                        hold_turns):
    held = hold_turns(AnswerDelta)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        chat.prompt.text = "hi"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.turn is not None and chat.turn.widget.answer_text,
                       what="the answer")
        await pilot.pause()
        assert "answer_now" not in footer_actions(chat)  # not at the next 2 s check
        held.release()
        await wait_for(pilot, lambda: chat.turn is None, what="the turn to end")
