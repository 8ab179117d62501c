"""Screenshots of the main screens (pytest-textual-snapshot). Deterministic: fixed terminal
sizes, fixed data, `show_timings=False` so no clock or speed reaches the picture, cursors that
do not blink (conftest.steady_cursors), a fixed machine for fit labels and speed estimates, and
waits on the screen's state, never on time.

After an intended change of the look: pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from textual.widgets import Input

from localr1.config import Settings
from localr1.models import fit
from localr1.paths import AppPaths
from localr1.tui.app import LocalR1App
from localr1.tui.prefs import TuiPrefs
from tests.tui.conftest import send, wait_for

FIXED_PATHS = AppPaths(config_dir=Path("/home/you/.config/localr1"),
                       data_dir=Path("/home/you/.local/share/localr1"),
                       cache_dir=Path("/home/you/.cache/localr1"),
                       models_dir=Path("/home/you/.local/share/localr1/models"),
                       db_path=Path("/home/you/.local/share/localr1/localr1.db"),
                       config_file=Path("/home/you/.config/localr1/config.toml"))


def _history(store) -> None:
    """A pinned, a yesterday's and an older conversation (dates set in the file)."""
    pinned = store.create_conversation(model="r1", title="Pinned: project notes")
    store.add_message(pinned.id, "user", "notes")
    store.set_pinned(pinned.id, True)
    for title, when in (("Yesterday's question", "-1 day"), ("An old chat", "-30 days")):
        conversation = store.create_conversation(model="r1", title=title)
        store.add_message(conversation.id, "user", title)
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE conversations SET updated_at = "
                       "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', ?) WHERE id = ?",
                       (when, conversation.id))


def _app(store, **kwargs) -> LocalR1App:
    kwargs.setdefault("settings", Settings(gpu_layers=0))
    return LocalR1App(store=store, prefs=TuiPrefs(), paths=FIXED_PATHS, show_timings=False,
                      **kwargs)


def test_chat_after_one_turn(snap_compare, store, prefill_engine):
    _history(store)
    app = _app(store, engine=prefill_engine)

    async def run_before(pilot) -> None:
        await send(pilot, "Hello! What is [bold]this[/bold]?")

    assert snap_compare(app, terminal_size=(120, 36), run_before=run_before)


def test_chat_reasoning_open_narrow(snap_compare, store, prefill_engine):
    app = _app(store, engine=prefill_engine)

    async def run_before(pilot) -> None:
        await send(pilot, "hello")
        await pilot.press("ctrl+t")

    assert snap_compare(app, terminal_size=(70, 30), run_before=run_before)


@pytest.fixture
def fixed_machine(monkeypatch):
    """Fit labels and speed estimates from a fixed machine (16 GB of RAM free, 20 GB/s, no
    GPU), not from this one's."""
    machine = fit.MachineMemory(16 * 10**9, 32 * 10**9, False, 0, "CPU",
                                cpu_bandwidth=20 * 10**9)
    monkeypatch.setattr(fit, "machine_memory", lambda **_: machine)


async def _wait_for_workers(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_welcome_screen(snap_compare, store, fixed_machine):
    async def run_before(pilot) -> None:
        await _wait_for_workers(pilot)
        boxes = list(pilot.app.screen.query(Input))
        # The cursor is drawn whenever the screenshot is taken: it does not blink.
        assert boxes and not any(box.cursor_blink for box in boxes)

    assert snap_compare(_app(store), terminal_size=(100, 32), run_before=run_before)


def test_models_screen(snap_compare, store, prefill_engine, fixed_machine):
    async def run_before(pilot) -> None:
        await pilot.press("ctrl+l")
        await _wait_for_workers(pilot)
        screen = pilot.app.screen
        await wait_for(pilot, lambda: not screen.installed_table.loading
                       and screen.available_table.row_count > 0, what="the listing")
        await pilot.pause()

    app = _app(store, engine=prefill_engine)
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_settings_screen(snap_compare, store, prefill_engine):
    app = _app(store, engine=prefill_engine)
    assert snap_compare(app, terminal_size=(100, 36), press=["f4"])
