"""Fixtures for the TUI tests: a store per test, engines loaded once, and Pilot helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, TextArea

from localr1.config import Settings
from localr1.engine.events import ReasoningDelta
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.paths import app_paths
from localr1.store import Store
from localr1.tui.app import LocalR1App
from localr1.tui.prefs import TuiPrefs

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def steady_cursors(monkeypatch):
    """Every text box in every screen has a cursor that does not blink: a blinking one is
    drawn or not depending on when a screenshot is taken (the welcome screen's snapshot
    missed its cursor once on a busy machine), and its timer repaints for nothing."""
    for widget_class in (Input, TextArea):
        original = widget_class.__init__

        def steady_init(self, *args, __original=original, **kwargs) -> None:
            __original(self, *args, **kwargs)
            self.cursor_blink = False

        monkeypatch.setattr(widget_class, "__init__", steady_init)


# How long a held turn waits at most for its test to release it (a test that failed first).
HOLD_LIMIT_SECONDS = 60.0


class TurnHold:
    """Holds the engine's stream right after the event that makes its `kind` text (reasoning
    or answer) contain `text` (any text, by default), until `release()`: a test acts on a
    running turn in a known state, whatever the machine's speed."""

    def __init__(self, kind: type, text: str = "") -> None:
        self.kind, self.text = kind, text
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wrap(self, events: Iterator) -> Iterator:
        seen = ""
        for event in events:
            yield event
            if self.reached.is_set() or not isinstance(event, self.kind):
                continue
            seen += event.text
            if self.text in seen:
                self.reached.set()
                self._released.wait(HOLD_LIMIT_SECONDS)


@pytest.fixture
def hold_turns(monkeypatch):
    """`hold_turns(kind=ReasoningDelta, text="", engine_class=Engine)`: every turn of that
    engine class is held as `TurnHold` says; released at the end of the test."""
    holds: list[TurnHold] = []

    def hold(kind: type = ReasoningDelta, text: str = "", engine_class: type = Engine,
             ) -> TurnHold:
        turn_hold = TurnHold(kind, text)
        original = engine_class.stream_chat

        def stream_chat(engine, *args, **kwargs):
            return turn_hold.wrap(original(engine, *args, **kwargs))

        monkeypatch.setattr(engine_class, "stream_chat", stream_chat)
        holds.append(turn_hold)
        return turn_hold

    yield hold
    for turn_hold in holds:
        turn_hold.release()


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.db") as opened:
        yield opened


@pytest.fixture(scope="session")
def prefill_engine(r1_prefill_model: Path):
    """One loaded scripted model shared by the tests that do not test loading."""
    engine = Engine.load(EngineConfig(r1_prefill_model, context_size=4096, gpu_layers=0))
    yield engine
    engine.close()


@pytest.fixture
def make_app(store: Store) -> Callable[..., LocalR1App]:
    def make(**kwargs) -> LocalR1App:
        kwargs.setdefault("store", store)
        kwargs.setdefault("settings", Settings(gpu_layers=0))
        kwargs.setdefault("prefs", TuiPrefs())
        kwargs.setdefault("paths", app_paths())
        return LocalR1App(**kwargs)

    return make


async def wait_for(pilot, predicate: Callable[[], object], timeout: float = 60.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def wait_ready(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.chat is not None and app.chat.is_mounted
                   and app.model_state in ("ready", "failed"), what="the model")


async def wait_turn(pilot, after: int) -> None:
    """Until turn number `after + 1` (or a later one) has started, ended and rendered."""
    chat = pilot.app.chat
    await wait_for(pilot, lambda: chat.turns.started > after and chat.turn is None,
                   what="the turn to end")
    await pilot.pause()


async def press_and_wait_turn(pilot, *keys: str) -> None:
    seq = pilot.app.chat.turns.started
    await pilot.press(*keys)
    await wait_turn(pilot, seq)


async def send(pilot, text: str) -> None:
    chat = pilot.app.chat
    chat.prompt.focus()
    chat.prompt.text = text
    await press_and_wait_turn(pilot, "enter")


def markdown_text(widget) -> str:
    """The plain text a Markdown-based widget shows (its blocks' rendered content)."""
    from textual.widgets._markdown import MarkdownBlock

    parts = []
    for block in widget.query(MarkdownBlock):
        content = getattr(block, "_content", None)
        if content is not None:
            parts.append(content.plain)
    return "\n".join(parts)


async def start_pull_in_models_screen(pilot, name: str):
    """Ctrl+L, pick catalog entry `name` in the available list, press p; the pull panel."""
    from localr1.tui.widgets.pull_panel import PullPanel

    await pilot.press("ctrl+l")
    screen = pilot.app.screen
    available = screen.available_table
    await wait_for(pilot, lambda: available.row_count > 10, what="the list")
    names = [str(available.get_cell_at((i, 1))) for i in range(available.row_count)]
    available.focus()
    available.move_cursor(row=names.index(name))
    await pilot.press("p")
    return screen.query_one(PullPanel)
