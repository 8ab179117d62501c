"""Literal model text, errors that leave the app usable, and the other screens."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from localr1.paths import app_paths
from localr1.store import Store
from localr1.tui.prefs import TuiPrefs
from localr1.tui.screens.models import ModelsScreen
from localr1.tui.screens.settings import SettingsScreen
from localr1.tui.screens.welcome import WelcomeScreen
from localr1.tui.widgets.message_view import AssistantMessage, UserMessage
from tests.fixtures.scripted_models import MARKUP_ANSWER_TEXT
from tests.tui.conftest import SIZE, markdown_text, send, wait_for

LITERAL_MARKUP = "[bold][link=file:///etc/passwd]click here[/link][/bold]"


async def test_model_markup_and_escapes_are_shown_literally(make_app, store, r1_markup_model):
    app = make_app(model_path=r1_markup_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        await send(pilot, "[red]user markup[/red] too")
        answer, = app.chat.log_view.query(AssistantMessage)
        shown = markdown_text(answer.answer)
        assert LITERAL_MARKUP in shown  # the brackets are text, nothing became a link/style
        assert "\\x1b[31m" in shown and "\x1b" not in shown  # ESC made visible, not executed
        for block in answer.answer.query("MarkdownBlock"):
            content = getattr(block, "_content", None)
            if content is not None:
                assert not any("link" in str(span.style) for span in content.spans)
        # The store keeps the model's exact text.
        stored = store.branch(store.latest_conversation_id())[-1]
        assert stored.content == MARKUP_ANSWER_TEXT
        # The user's markup is literal in the message, the sidebar and the header.
        user, = app.chat.log_view.query(UserMessage)
        assert "[red]user markup[/red] too" in str(user.query_one(".body").render())
        options = app.chat.sidebar.options
        assert "[red]user markup[/red] too" in str(options.get_option_at_index(1).prompt)
        assert "[red]user markup[/red]" in str(app.chat.header.render())
        # Copying gives the visible form too: no raw escape reaches a clipboard.
        await pilot.press("ctrl+b")
        assert "\x1b" not in app.clipboard and LITERAL_MARKUP in app.clipboard
        # What the terminal would receive has no ESC from the model either.
        assert "\\x1b[31m" in app.export_screenshot().replace("&#160;", " ")


async def test_welcome_flow_when_no_model(make_app, tmp_path, r1_prefill_model):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen)
        text = str(app.screen.query_one(".path").render())
        assert str(app_paths().models_dir) in text
        box = app.screen.query_one("#model_path", Input)
        box.value = str(tmp_path / "missing.gguf")
        await pilot.press("enter")
        error = app.screen.query_one("#error")
        await wait_for(pilot, lambda: "no such file" in str(error.render()), what="the error")
        # A typed path's escape sequences are shown, never sent to the terminal.
        box.value = str(tmp_path / "clear\x1b[2J.gguf")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "clear" in str(error.render())
                       and "checking" not in str(error.render()), what="the error")
        assert "\x1b" not in str(error.render()) and "\\x1b[2J" in str(error.render())
        not_gguf = tmp_path / "notes.gguf"
        not_gguf.write_text("not a model")
        box.value = str(not_gguf)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "notes.gguf" in str(error.render())
                       and "checking" not in str(error.render()), what="the check")
        assert isinstance(app.screen, WelcomeScreen)
        box.value = str(r1_prefill_model)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.screen is app.chat
        # The header names it as the library does (not by the GGUF's general.name).
        header = str(app.chat.header.render())
        assert app.model_label in header and "scripted R1" not in header
        await send(pilot, "hi")
        assert app.chat._last_answer().finish_reason == "stop"
    # It was added to the library (not copied), so the next start finds it.
    from localr1.models.library import find_installed

    assert find_installed(str(r1_prefill_model), app_paths().models_dir) is not None
    assert _choose_model_path() == r1_prefill_model


def _choose_model_path():
    from localr1.config import Settings
    from localr1.models.choice import choose_model

    return choose_model(None, Settings(), app_paths(), lenient=True).path


async def test_welcome_rescan_finds_a_pulled_model(make_app, r1_prefill_model):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen)
        await pilot.press("ctrl+r")
        assert "still no .gguf" in str(app.screen.query_one("#error").render())
        models_dir = app_paths().models_dir
        models_dir.mkdir(parents=True)
        shutil.copy(r1_prefill_model, models_dir / "r1-test.gguf")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.model_label == "r1-test"


async def test_welcome_escape_browses_history_without_a_model(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.chat
        app.chat.prompt.text = "typed before any model"
        await pilot.press("enter")
        await pilot.pause()
        assert app.chat.prompt.text == "typed before any model"  # nothing typed is lost
        assert store.latest_conversation_id() is None


async def test_a_model_that_fails_to_load_is_a_notification(make_app, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    app = make_app(model_path=bad)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "failed", what="the failure")
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
        assert any("broken.gguf" in m for m in messages)
        # No model installed: the welcome screen comes back with the reason.
        assert isinstance(app.screen, WelcomeScreen)
        assert "broken.gguf" in str(app.screen.query_one("#error").render())


async def test_out_of_context_is_a_notification_and_the_text_is_kept(make_app, store,
                                                                      r1_loop_model):
    app = make_app(model_path=r1_loop_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        long_prompt = "word " * 700  # the loop model's context is 512 tokens
        await send(pilot, long_prompt)
        messages = [str(n.message) for n in app._notifications]
        # Said in the app's terms: no CLI flags.
        assert any("too long for the context" in m for m in messages)
        assert not any("--ctx" in m or "--max-tokens" in m for m in messages)
        # The message is in the store (as sent), shown, and the app takes the next prompt.
        branch = store.branch(store.latest_conversation_id())
        assert branch[0].content == long_prompt and branch[-1].finish_reason == "error"
        assert [w.text for w in app.chat.log_view.query(UserMessage)] == [long_prompt]
        assert app.chat.turn is None
        await pilot.press("ctrl+g")
        assert app.chat.prompt.text == long_prompt


async def test_settings_are_saved_for_the_new_conversation(make_app, store, prefill_engine):
    app = make_app(engine=prefill_engine, prefs=TuiPrefs())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#temperature", Input).value = "9"
        await pilot.press("ctrl+s")
        assert "Temperature" in str(screen.query_one("#error").render())
        screen.query_one("#temperature", Input).value = "0.2"
        screen.query_one("#max_tokens", Input).value = "300"
        screen.query_one("#system_prompt").text = "Answer briefly."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is app.chat
        await send(pilot, "hello")
        conversation = store.conversation(store.latest_conversation_id())
        assert conversation.system_prompt == "Answer briefly."
        assert conversation.params["temperature"] == 0.2
        assert conversation.params["max_tokens"] == 300
        assert conversation.params["context_size"] == 8192
        # Reopening the conversation gives the same settings back.
        await app.chat.open_conversation(None)
        await app.chat.open_conversation(conversation.id)
        assert app.chat.conv_settings.temperature == 0.2


async def test_models_screen_lists_uses_and_removes(make_app, r1_original_model,
                                                    prefill_engine):
    models_dir = app_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(r1_original_model, models_dir / "a-original.gguf")
    shutil.copy(r1_original_model, models_dir / "b-spare.gguf")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.query_one("DataTable")
        await wait_for(pilot, lambda: table.row_count == 2, what="the list")
        assert [str(table.get_cell_at((i, 0))) for i in range(2)] == ["a-original",
                                                                      "b-spare"]
        assert str(table.get_cell_at((0, 2))) == "F16"
        # Remove b-spare (our own copy in the models folder: deleted) after confirming.
        table.move_cursor(row=1)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 1, what="the removal")
        assert not (models_dir / "b-spare.gguf").exists()
        # Use a-original: it loads in a worker, the UI stays up meanwhile.
        table.move_cursor(row=0)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.chat
        await wait_for(pilot, lambda: app.model_state == "ready"
                       and app.model_label == "a-original", what="the switch")
        await send(pilot, "hello")
        assert app.chat._last_answer().model_label == "a-original"


async def test_narrow_terminal_hides_the_sidebar(make_app, prefill_engine):
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=(70, 30)) as pilot:
        chat = app.chat
        assert chat.has_class("-narrow")
        assert not chat.sidebar.display or chat.sidebar.region.width == 0
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert chat.sidebar.region.width > 0
        assert isinstance(chat.sidebar.query_one(OptionList), OptionList)


async def test_switching_to_a_broken_model_falls_back_to_the_previous_one(make_app, tmp_path,
                                                                         r1_prefill_model):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    app = make_app(model_path=r1_prefill_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        app.use_model(bad)
        await wait_for(pilot, lambda: any("broken.gguf" in str(n.message)
                                          for n in app._notifications), what="the failure")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the way back")
        assert app.model_path == r1_prefill_model and app.engine is not None
        await send(pilot, "still works?")
        assert app.chat._last_answer().finish_reason == "stop"


async def test_a_conversation_with_another_context_size_reloads_then_sends(make_app,
                                                                         r1_prefill_model):
    from dataclasses import replace

    app = make_app(model_path=r1_prefill_model)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        chat = app.chat
        assert app.engine.info.n_ctx == 4096
        chat.conv_settings = replace(chat.conv_settings, context_size=1024)
        chat.prompt.text = "hello after a reload"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.turns.started == 1 and chat.turn is None,
                       what="the reload and the turn")
        assert app.engine.info.n_ctx == 1024
        assert chat._last_answer().finish_reason == "stop"
        assert chat.prompt.text == ""


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 1 MB filesystem (tmpfs), to run out of space for real."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    # Unbuffered, so nothing is left to write (and fail) when the file closes.
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC: full
        while True:
            f.write(b"\0" * 4096)
    return filler


async def test_a_full_disk_is_a_notification_and_the_text_is_kept(make_app, tiny_disk,
                                                                 prefill_engine):
    with Store.open(tiny_disk / "history.db") as store:
        app = make_app(store=store, engine=prefill_engine)
        async with app.run_test(size=SIZE) as pilot:
            filler = _fill(tiny_disk)
            app.chat.prompt.focus()
            app.chat.prompt.text = "please keep this text"
            await pilot.press("enter")
            await wait_for(pilot, lambda: any("full" in str(n.message)
                                              for n in app._notifications),
                           what="the disk-full notification")
            await wait_for(pilot, lambda: app.chat.turn is None, what="the turn to end")
            assert app.chat.prompt.text == "please keep this text"  # nothing typed is lost
            # Room again: the same text goes through, and the app never stopped.
            filler.unlink()
            app.chat.prompt.text = ""
            await send(pilot, "please keep this text")
            assert app.chat._last_answer().finish_reason == "stop"
            # Full again, in a conversation that exists: the worker's writes fail this time.
            filler = _fill(tiny_disk)
            app._notifications.clear()
            await send(pilot, "and this one")
            assert any("full" in str(n.message) for n in app._notifications)
            assert app.chat.prompt.text == "and this one"
            filler.unlink()
            app.chat.prompt.text = ""
            await send(pilot, "and this one")
            assert app.chat._last_answer().finish_reason == "stop"
        branch = store.branch(store.latest_conversation_id())
        assert [m.content for m in branch if m.role == "user"] == ["please keep this text",
                                                                   "and this one"]
        assert store._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
