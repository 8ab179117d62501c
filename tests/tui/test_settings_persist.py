"""F4 settings of an existing conversation are saved with it: a new app on the same history
shows them again (they used to be lost at exit)."""

from __future__ import annotations

import json
import os
import sqlite3
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


# What `run --top-k 10 --seed 5` or `batch --save` stored, beyond what F4 shows.
RUN_PARAMS = {"temperature": 0.6, "top_k": 10, "seed": 5, "min_p": 0.05,
              "batch_id": "b-1", "record_id": "r-7"}


async def _save_in_f4(pilot, temperature: str) -> None:
    app = pilot.app
    await pilot.press("f4")
    await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), what="F4")
    app.screen.query_one("#temperature", Input).value = temperature
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: app.screen is app.chat, what="the chat")


def _notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_f4_keeps_the_params_it_does_not_show_and_turns_use_them(
        make_app, store: Store, prefill_engine) -> None:
    c = store.create_conversation(params=RUN_PARAMS, first_user_message="hi")
    app = make_app(engine=prefill_engine, conversation_id=c.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat is not None and app.chat.conversation is not None,
                       what="the conversation")
        params = app.chat.conv_settings.generation_params(app.settings)
        assert (params.top_k, params.min_p, params.seed) == (10, 0.05, 5)  # as `run -c`
        await _save_in_f4(pilot, "0.3")
        assert "Settings saved." in _notes(app)
        params = app.chat.conv_settings.generation_params(app.settings)
        assert (params.temperature, params.top_k, params.seed) == (0.3, 10, 5)
    saved = store.conversation(c.id).params
    assert saved["temperature"] == 0.3
    assert {k: saved[k] for k in RUN_PARAMS if k != "temperature"} == \
        {k: v for k, v in RUN_PARAMS.items() if k != "temperature"}


async def test_a_failed_save_says_so_and_its_settings_die_with_the_conversation(
        make_app, store: Store, prefill_engine) -> None:
    c = store.create_conversation(first_user_message="hi")
    app = make_app(engine=prefill_engine, conversation_id=c.id)
    with sqlite3.connect(store.path) as conn:  # a real write failure, for params only
        conn.execute("CREATE TRIGGER frozen BEFORE UPDATE OF params ON conversations "
                     "BEGIN SELECT RAISE(ABORT, 'settings are frozen'); END")
    conn.close()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat is not None and app.chat.conversation is not None,
                       what="the conversation")
        await _save_in_f4(pilot, "0.3")
        notes = _notes(app)
        assert any("Settings not saved" in n and "settings are frozen" in n for n in notes)
        assert "Settings saved." not in notes
        assert app.settings_for(store.conversation(c.id)).temperature == 0.3  # in memory
        await pilot.press("f8")
        await wait_for(pilot, lambda: app.screen is not app.chat, what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.chat.conversation is None, what="the delete")
    reused = store.create_conversation(first_user_message="new")  # no AUTOINCREMENT
    assert reused.id == c.id
    assert app.settings_for(reused).temperature == 0.6


async def test_changes_made_elsewhere_show_after_an_f4_save(make_app, store: Store,
                                                            prefill_engine) -> None:
    c = store.create_conversation(first_user_message="hi")
    app = make_app(engine=prefill_engine, conversation_id=c.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat is not None and app.chat.conversation is not None,
                       what="the conversation")
        await _save_in_f4(pilot, "0.3")
        # `run --cid N --system ... --temperature` in another process
        with Store.open(store.path) as other:
            other.set_system_prompt(c.id, "Be brief.")
            other.set_params(c.id, {**other.conversation(c.id).params, "temperature": 0.9})
        settings = app.settings_for(store.conversation(c.id))
        assert (settings.temperature, settings.system_prompt) == (0.9, "Be brief.")
