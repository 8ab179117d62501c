"""Pulling models inside `localr1 chat`: the welcome screen and the model manager, against the
loopback Hub server (the real huggingface_hub client, real files, real sha256 checks)."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import Button, ProgressBar

from localr1.config import load_settings
from localr1.models.library import find_installed
from localr1.paths import app_paths
from localr1.tui.screens.models import ModelsScreen
from localr1.tui.screens.welcome import WelcomeScreen
from localr1.tui.widgets.pull_panel import PullPanel
from tests.hub_server import file_sha256, hub_for_tests
from tests.tui.conftest import SIZE, send, start_pull_in_models_screen, wait_for

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
R7_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF"
R7_FILE = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"


@pytest.fixture()
def hub(monkeypatch, tmp_path, r1_prefill_model):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as running:
        running.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        running.add_file(R7_REPO, R7_FILE, r1_prefill_model)
        yield running


def _text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


async def test_welcome_pulls_the_default_model_and_chats(make_app, hub, r1_prefill_model):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, WelcomeScreen)
        button = screen.query_one("#pull", Button)
        # The button names the model, its size and whether it fits here.
        await wait_for(pilot, lambda: "r1:1.5b-q4_k_m" in str(button.label), what="the label")
        assert "GB" in str(button.label)
        facts = _text(screen, "#pull-facts")
        assert "DeepSeek-R1-Distill-Qwen-1.5B, Q4_K_M: " in facts
        assert any(fit in facts for fit in ("fits", "too large", "offload"))
        await pilot.click("#pull")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the pulled model")
        assert app.screen is app.chat
        await send(pilot, "hi")
        assert app.chat._last_answer().finish_reason == "stop"
    path = app_paths().models_dir / R1_REPO / R1_FILE
    assert file_sha256(path) == file_sha256(r1_prefill_model)
    assert find_installed("r1", app_paths().models_dir) is not None
    assert len(hub.gets(R1_FILE)) == 1


async def test_welcome_pull_cancels_and_resumes(make_app, hub, r1_prefill_model):
    hub.throttle_bytes_per_s = 4_000_000  # ~11 s for the 45 MB file: time to cancel
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.click("#pull")
        panel = screen.query_one(PullPanel)
        bar = panel.query_one(ProgressBar)
        await wait_for(pilot, lambda: (bar.progress or 0) > 2_000_000, what="some bytes")
        assert "downloading" in _text(panel, "#pull-state")
        await pilot.press("escape")  # esc stops the download first; the screen stays
        await wait_for(pilot, lambda: "interrupted" in _text(panel, "#pull-state"),
                       what="the stop")
        assert isinstance(app.screen, WelcomeScreen)
        assert "pull again to resume" in _text(panel, "#pull-state")
        kept = list(app_paths().models_dir.rglob("*.part"))
        assert len(kept) == 1 and kept[0].stat().st_size > 0
        hub.throttle_bytes_per_s = None
        await pilot.click("#pull-action")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the resumed pull")
    resumed = hub.gets(R1_FILE)[-1]
    assert resumed.headers.get("range", "").startswith("bytes=")
    path = app_paths().models_dir / R1_REPO / R1_FILE
    assert file_sha256(path) == file_sha256(r1_prefill_model)


async def test_model_manager_pulls_sets_default_and_uses(make_app, hub, prefill_engine,
                                                         r1_original_model, r1_prefill_model):
    models_dir = app_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(r1_original_model, models_dir / "mine.gguf")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        installed, available = screen.installed_table, screen.available_table
        await wait_for(pilot, lambda: installed.row_count == 1 and available.row_count > 10,
                       what="the lists")
        assert str(installed.get_cell_at((0, 0))) == "mine"  # the whole name, not cut
        names = [str(available.get_cell_at((i, 1))) for i in range(available.row_count)]
        assert "r1:7b-q4_k_m" in names and "r1:70b-q8_0" in names
        # Set the installed one as default: written to config.toml, marked in the list.
        await pilot.press("s")
        await wait_for(pilot, lambda: "default" in str(installed.get_cell_at((0, 7))),
                       what="the default mark")
        assert load_settings(app.paths.config_file).default_model == "mine"
        # Pull r1:7b from the catalog list with enter; leave the screen while it downloads.
        available.focus()
        available.move_cursor(row=names.index("r1:7b-q4_k_m"))
        hub.throttle_bytes_per_s = 30_000_000
        await pilot.press("enter")
        await pilot.press("escape")
        assert app.screen is app.chat
        await wait_for(pilot, lambda: any("Pulled r1:7b-q4_k_m" in str(n.message)
                                          for n in app._notifications), what="the pull")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: installed.row_count == 2, what="the new model")
        rows = {str(installed.get_cell_at((i, 0))): i for i in range(installed.row_count)}
        installed.focus()
        installed.move_cursor(row=rows["r1:7b-q4_k_m"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model_state == "ready"
                       and app.model_label == "r1:7b-q4_k_m", what="the switch")
        await send(pilot, "hello")
        assert app.chat._last_answer().model_label == "r1:7b-q4_k_m"
    assert file_sha256(models_dir / R7_REPO / R7_FILE) == file_sha256(r1_prefill_model)


async def test_a_failed_pull_is_one_line_and_the_app_stays_usable(make_app, hub,
                                                                  prefill_engine):
    hub.corrupt_paths.add(R7_FILE)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        panel = await start_pull_in_models_screen(pilot, "r1:7b-q4_k_m")
        await wait_for(pilot, lambda: "checksum mismatch" in _text(panel, "#pull-state"),
                       what="the checksum error")
        assert "\n" not in _text(panel, "#pull-state").strip()
        assert not list(app_paths().models_dir.rglob("*7B*.gguf"))
        await pilot.press("escape")
        await send(pilot, "still here?")
        assert app.chat._last_answer().finish_reason == "stop"
