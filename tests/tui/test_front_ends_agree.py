"""The TUI shows what the core computes, the same as the CLI: the model's name in the history,
the models screen's rows (fit, last used), and a pull's fit text."""

from __future__ import annotations

import json
import time

import pytest

from localr1.models import fit
from localr1.models.catalog import load_catalog
from localr1.models.listing import catalog_rows, installed_rows
from localr1.models.registry import ModelRegistry
from localr1.paths import app_paths
from localr1.sizes import format_bytes
from localr1.tui.screens.models import ModelsScreen
from tests.hub_server import hub_for_tests
from tests.test_model_choice import FIXED_MACHINE, R1_FILE, R1_REPO, localr1
from tests.tui.conftest import SIZE, send, start_pull_in_models_screen, wait_for


@pytest.fixture()
def fixed_machine(monkeypatch):
    monkeypatch.setattr(fit, "machine_memory", lambda **_: FIXED_MACHINE)


async def test_tui_and_run_record_the_same_name(make_app, store, tmp_path, r1_prefill_model):
    tiny = tmp_path / "elsewhere" / "tiny.gguf"
    tiny.parent.mkdir()
    tiny.symlink_to(r1_prefill_model)
    app = make_app(model_path=tiny)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.model_label == "tiny"
        await send(pilot, "hi")
    conversation = store.conversation(store.latest_conversation_id())
    assert conversation.model == "tiny"
    assert store.branch(conversation.id)[-1].model == "tiny"
    # The CLI, for the same file, records the same name.
    assert localr1("run", "-m", tiny, "hi").exit_code == 0
    (listed,) = json.loads(localr1("history", "list", "--json").stdout)
    assert listed["model"] == conversation.model


async def test_models_screen_rows_are_the_listing_rows(make_app, prefill_engine,
                                                       r1_original_model, fixed_machine):
    assert localr1("import", r1_original_model, "--name", "mine").exit_code == 0
    ModelRegistry.default().mark_used("mine", when=time.time() - 3 * 3600)
    models_dir = app_paths().models_dir
    (row,) = installed_rows(models_dir)
    not_installed = [r for r in catalog_rows(load_catalog(), models_dir) if not r.installed]
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        installed, available = screen.installed_table, screen.available_table
        await wait_for(pilot, lambda: installed.row_count == 1 and available.row_count > 10,
                       what="the lists")
        cells = [str(installed.get_cell_at((0, i))) for i in range(7)]
        assert cells == [row.name, format_bytes(row.model.size_bytes), row.quant,
                         row.fit_label, "—", row.speed, row.last_used]
        assert row.last_used == "3 h ago"
        shown = [(str(available.get_cell_at((i, 1))), str(available.get_cell_at((i, 4))))
                 for i in range(available.row_count)]
        assert shown == [(r.name, r.fit.label) for r in not_installed]
    # `localr1 list` prints the same row.
    line = localr1("list").stdout.splitlines()[1]
    assert line.startswith("mine ") and line.endswith(f"{row.fit_label}  {row.speed}  3 h ago")


async def test_pull_panel_shows_the_planned_fit(make_app, prefill_engine, monkeypatch, tmp_path,
                                                r1_prefill_model, fixed_machine):
    from localr1.models.pull_plan import plan_pull

    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as hub:
        hub.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        planned = plan_pull("r1:1.5b-q4_k_m")
        app = make_app(engine=prefill_engine)
        async with app.run_test(size=SIZE) as pilot:
            panel = await start_pull_in_models_screen(pilot, "r1:1.5b-q4_k_m")
            await wait_for(pilot, lambda: not panel.running and panel.name_pulling is None,
                           what="the pull")
            assert str(panel.query_one("#pull-fit").render()) == planned.fit_text
            assert str(panel.query_one("#pull-title").render()) == \
                f"r1:1.5b-q4_k_m · {R1_REPO} · {planned.size_text}"


async def test_models_screen_counts_the_workers_chat_was_started_with(make_app, prefill_engine,
                                                                      r1_original_model):
    """`chat --rpc ENDPOINT` (here: nothing listens there) counts that worker, not config's."""
    from localr1.config import Settings
    from tests.rpc_workers import free_port

    assert localr1("import", r1_original_model, "--name", "mine").exit_code == 0
    app = make_app(engine=prefill_engine,
                   settings=Settings(gpu_layers=0, rpc=(f"127.0.0.1:{free_port()}",)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        installed = app.screen.installed_table
        await wait_for(pilot, lambda: installed.row_count == 1, what="the list")
        assert str(installed.get_cell_at((0, 3))).endswith("(workers unreachable: local only)")
