"""F4 settings of an existing conversation are saved with it: a new app on the same history
shows them again (they used to be lost at exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from textual.widgets import Input, TextArea

from localr1.store import Store
from localr1.tui.screens.settings import SettingsScreen
from tests.tui.conftest import SIZE, send, wait_for


async def test_settings_come_back_after_a_restart(make_app, store: Store, prefill_engine,
                                                  r1_prefill_model: Path,
                                                  tmp_path: Path) -> None:
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        conversation_id = store.latest_conversation_id()
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
        screen = app.screen
        screen.query_one("#temperature", Input).value = "0.3"
        screen.query_one("#reasoning_budget", Input).value = "64"
        screen.query_one("#system_prompt", TextArea).text = "Answer like a pirate."
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")

    # Saved in the database, not only in the app's memory.
    with Store.open(store.path) as other:
        saved = other.conversation(conversation_id)
    assert saved.system_prompt == "Answer like a pirate."
    assert (saved.params["temperature"], saved.params["reasoning_budget"]) == (0.3, 64)

    reopened = make_app(engine=prefill_engine, store=store.path,
                        conversation_id=conversation_id)
    async with reopened.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: reopened.chat is not None
                       and reopened.chat.conversation is not None
                       and reopened.chat.conversation.id == conversation_id,
                       what="the conversation")
        settings = reopened.chat.conv_settings
        assert (settings.temperature, settings.reasoning_budget, settings.system_prompt) == \
            (0.3, 64, "Answer like a pirate.")
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(reopened.screen, SettingsScreen), what="F4")
        screen = reopened.screen
        assert screen.query_one("#temperature", Input).value == "0.3"
        assert screen.query_one("#system_prompt", TextArea).text == "Answer like a pirate."
        assert not screen.query_one("#system_prompt", TextArea).read_only

    # `localr1 run --cid` continues with them: the temperature and budget set in F4, and the
    # system prompt (folded into the first user turn, so the prompt grows by its tokens).
    def run(*args: str) -> dict:
        env = {**os.environ, "LOCALR1_DB": str(store.path)}
        result = subprocess.run([sys.executable, "-m", "localr1", "run", "-m",
                                 str(r1_prefill_model), "--json", *args],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    continued = run("--cid", str(conversation_id), "again")
    assert continued["conversation_id"] == conversation_id
    assert (continued["params"]["temperature"], continued["params"]["reasoning_budget"]) == \
        (0.3, 64)
    flagged = run("--cid", str(conversation_id), "--temperature", "0.9", "again")
    assert flagged["params"]["temperature"] == 0.9  # a typed flag wins
    with Store.open(store.path) as other:
        assert other.conversation(conversation_id).params["temperature"] == 0.3
        history = [m.content for m in other.branch(conversation_id) if m.role == "user"]
    assert history == ["hello", "again", "again"]
    fresh = run("hello")
    fresh_again = run("-c", "again")
    pirate_tokens = continued["usage"]["prompt_tokens"] - fresh_again["usage"]["prompt_tokens"]
    assert pirate_tokens >= 5 and fresh["params"]["temperature"] == 0.6
