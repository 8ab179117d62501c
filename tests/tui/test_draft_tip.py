"""The model manager's draft tip for the highlighted model and its fit labels with a configured
draft model, on models pulled from the loopback Hub."""

from __future__ import annotations

from localr1.tui.screens.models import ModelsScreen
from tests.test_draft_suggestion import hub, pull  # noqa: F401 - the fixture
from tests.test_kv_memory import write_config
from tests.tui.conftest import SIZE, wait_for


def _tip(screen) -> str | None:
    tip = screen.query_one("#draft-tip")
    return str(tip.render()) if tip.display else None


async def test_the_tip_follows_the_highlighted_model(make_app, hub, prefill_engine):  # noqa: F811
    pull("r1:7b")
    pull("r1:8b")
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        installed = screen.installed_table
        await wait_for(pilot, lambda: installed.row_count == 2, what="the installed models")
        rows = {str(installed.get_cell_at((i, 0))): i for i in range(installed.row_count)}
        installed.focus()
        installed.move_cursor(row=rows["r1:7b-q4_k_m"])
        await wait_for(pilot, lambda: _tip(screen), what="the tip")
        assert _tip(screen) == ('tip: a draft model speeds this one up: pull r1:1.5b (below), '
                                'then draft_model = "r1:1.5b" in config.toml')
        installed.move_cursor(row=rows["r1:8b-q4_k_m"])
        await wait_for(pilot, lambda: _tip(screen) is None, what="no tip for a Llama distill")


async def test_fit_labels_say_with_draft(make_app, hub, prefill_engine):  # noqa: F811
    pull("r1:7b")
    pull("r1")
    write_config('draft_model = "r1:1.5b"\n')
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        screen = app.screen
        installed, available = screen.installed_table, screen.available_table
        await wait_for(pilot, lambda: installed.row_count == 2 and available.row_count > 5,
                       what="the lists")
        fits = {str(installed.get_cell_at((i, 0))): str(installed.get_cell_at((i, 3)))
                for i in range(installed.row_count)}
        assert fits["r1:7b-q4_k_m"].endswith(" (with draft)")
        assert installed.columns["fit"].width >= len(fits["r1:7b-q4_k_m"])  # whole, not cut
        assert "draft" not in fits["r1:1.5b-q4_k_m"]
        assert all(str(available.get_cell_at((i, 4))).endswith(" (with draft)")
                   for i in range(available.row_count)
                   if not str(available.get_cell_at((i, 1))).startswith("r1:1.5b-q4_k_m"))
        installed.focus()
        installed.move_cursor(row=0)
        await pilot.pause()
        assert _tip(screen) is None  # a draft is configured
