"""A model on a server (--endpoint): its thinking cannot be ended early, so the chat screen
does not offer "answer now" (F5 does nothing, the palette says why), and F4 does not claim a
context in use it does not know."""

from __future__ import annotations

from textual.widgets import Static

from localr1.config import Settings
from localr1.engine.events import ReasoningDelta
from localr1.engine.remote_engine import RemoteEngine
from localr1.paths import app_paths
from localr1.tui.app import LocalR1App
from localr1.tui.prefs import TuiPrefs
from localr1.tui.screens.settings import SettingsScreen
from tests.openai_stub import StubOpenAI, reasoning_field_stream
from tests.tui.conftest import SIZE, wait_for
from tests.tui.test_keys_and_f4 import footer_actions


async def test_a_server_model_offers_no_answer_now_and_no_context_in_use(store, hold_turns):
    held = hold_turns(ReasoningDelta, engine_class=RemoteEngine)
    stream = reasoning_field_stream("reasoning_content", "Let me think about it.", "Four.")
    with StubOpenAI([stream], models=["r1:14b"]) as stub:
        engine = RemoteEngine.connect(stub.url)
        assert not engine.info.can_answer_now
        app = LocalR1App(store=store, engine=engine, model_label=engine.info.name,
                         settings=Settings(), prefs=TuiPrefs(), paths=app_paths())
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.chat is not None and app.chat.is_mounted,
                           what="the chat screen")
            chat = app.chat
            chat.prompt.text = "hi"
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.turn is not None
                           and chat.turn.widget.reasoning_text, what="the thinking")
            assert chat.thinking
            await pilot.pause()
            assert "answer_now" not in footer_actions(chat)
            await pilot.press("f5")
            assert not chat.turn.answer_now.is_set()
            chat.action_answer_now()  # what the command palette runs
            assert not chat.turn.answer_now.is_set()
            await pilot.pause()
            assert any("cannot be told to stop thinking" in str(n.message)
                       for n in app._notifications)
            held.release()
            await wait_for(pilot, lambda: chat.turn is None, what="the turn to end")

            await pilot.press("f4")
            await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
            shown = " ".join(str(widget.render()) for widget in app.screen.query(Static))
            assert "In use: 0" not in shown and not app.screen.query("#context_in_use")
