"""The model manager's Score column: each installed model's last `localr1 eval` run from the
history ("quick 83% ×4"), "—" without one, read off the UI thread, and a history that cannot
be read leaves the screen working."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from localr1.paths import app_paths
from localr1.store import EvalRunRecord, Store
from localr1.tui.screens.models import SCORE_WIDTH, ModelsScreen, score_text
from tests.tui.conftest import SIZE, wait_for


def _run(**changes) -> dict:
    run = {"model": "a-original", "set_name": "quick", "set_digest": "d" * 64, "problems": 6,
           "samples": 4, "pass_at_1": 5 / 6, "cons_at_k": 5 / 6, "format_rate": 1.0,
           "finished_at": "2025-04-01T10:00:00+00:00"}
    return {**run, **changes}


def _two_models(r1_original_model) -> None:
    models_dir = app_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(r1_original_model, models_dir / "a-original.gguf")
    shutil.copy(r1_original_model, models_dir / "b-spare.gguf")


async def _scores(pilot) -> dict[str, str]:
    """{model name: its Score cell} once the installed list is drawn."""
    await pilot.press("ctrl+l")
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    table = screen.installed_table
    await wait_for(pilot, lambda: table.row_count == 2 and not table.loading, what="the list")
    column = list(table.columns).index("score")
    assert [str(c.label) for c in table.columns.values()][column - 1:column + 1] == \
        ["Fit", "Score"]  # right after the fit label
    return {str(table.get_cell_at((i, 0))): str(table.get_cell_at((i, column)))
            for i in range(table.row_count)}


async def test_a_model_with_a_run_shows_its_last_score(make_app, store: Store, prefill_engine,
                                                       r1_original_model, monkeypatch):
    _two_models(r1_original_model)
    store.add_eval_run(**_run(pass_at_1=0.25, set_name="gsm8k", samples=1,
                              finished_at="2025-03-01T00:00:00+00:00"))
    store.add_eval_run(**_run())  # the newer run is the one shown
    store.add_eval_run(**_run(model="someone-else", pass_at_1=0.0))
    readers = []
    original = Store.last_eval_scores

    def last_eval_scores(self) -> dict[str, EvalRunRecord]:
        readers.append(threading.current_thread())
        return original(self)

    monkeypatch.setattr(Store, "last_eval_scores", last_eval_scores)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        assert await _scores(pilot) == {"a-original": "quick 83% ×4", "b-spare": "—"}
        assert readers and threading.main_thread() not in readers
        # A run added while the screen is open shows on refresh (r).
        store.add_eval_run(**_run(model="B-SPARE", pass_at_1=1.0, samples=16))
        count = len(readers)
        await pilot.press("r")
        table = app.screen.installed_table
        await wait_for(pilot, lambda: len(readers) > count and not table.loading,
                       what="the refresh")
        column = list(table.columns).index("score")
        await wait_for(pilot, lambda: str(table.get_cell_at((1, column))) == "quick 100% ×16",
                       what="b-spare's score (its name in any case)")


async def test_without_runs_every_model_shows_a_dash(make_app, prefill_engine,
                                                     r1_original_model):
    _two_models(r1_original_model)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        assert await _scores(pilot) == {"a-original": "—", "b-spare": "—"}


async def test_a_history_that_cannot_be_read_shows_dashes(make_app, store: Store,
                                                          prefill_engine, r1_original_model):
    _two_models(r1_original_model)
    store.add_eval_run(**_run())
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        # The file is replaced by junk and its WAL is gone: the app's open connection still
        # reads the old file, the listing worker's new connection cannot open this one.
        junk = store.path.with_name("junk.db")
        junk.write_bytes(b"not a database at all\n" * 300)
        os.replace(junk, store.path)
        for suffix in ("-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)
        assert await _scores(pilot) == {"a-original": "—", "b-spare": "—"}
        assert isinstance(app.screen, ModelsScreen)


async def test_the_columns_through_last_used_fit_120_columns(make_app, store: Store,
                                                             prefill_engine, r1_original_model):
    _two_models(r1_original_model)
    store.add_eval_run(**_run(set_name="math-500", samples=16))
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=(120, 40)) as pilot:
        scores = await _scores(pilot)
        table = app.screen.installed_table
        widths = {key.value: column.get_render_width(table)
                  for key, column in table.columns.items()}
        shown = sum(width for key, width in widths.items() if key != "state")
        assert shown + len(" ● in use") <= 120, widths
        assert scores["a-original"] == "math-… 83% ×16"
        assert len(scores["a-original"]) <= SCORE_WIDTH


def _record(**changes) -> EvalRunRecord:
    values = {"id": 1, "model": "m", "set_name": "quick", "set_digest": "d" * 64, "problems": 6,
              "samples": 4, "pass_at_1": 5 / 6, "ci_low": None, "ci_high": None,
              "cons_at_k": 0.5, "format_rate": 1.0, "mean_reasoning_tokens": None,
              "seconds_per_sample": None, "params": {}, "solved": (), "results_path": None,
              "started_at": "2025-04-01T10:00:00+00:00",
              "finished_at": "2025-04-01T10:00:00+00:00"}
    return EvalRunRecord(**{**values, **changes})


def test_score_text_keeps_the_numbers_and_shortens_the_set_name() -> None:
    assert score_text(_record()) == "quick 83% ×4"
    assert score_text(_record(pass_at_1=1.0)) == "quick 100% ×4"
    assert score_text(_record(pass_at_1=1.0, samples=16)) == "quick 100% ×16"
    assert score_text(_record(pass_at_1=1.0, samples=128)) == "qui… 100% ×128"
    assert score_text(_record(pass_at_1=0.0, samples=64)) == "quick 0% ×64"
    assert score_text(_record(set_name="gsm8k", pass_at_1=0.92, samples=1)) == "gsm8k 92% ×1"
    assert score_text(_record(set_name="puzzles.jsonl")) == "puzzles 83% ×4"
    assert score_text(_record(set_name="my-problems.jsonl")) == "my-pro… 83% ×4"
    assert score_text(_record(set_name="a\x1b[31mb")) == "a\\x1b[… 83% ×4"
    assert all(len(score_text(_record(set_name="x" * n, samples=k))) <= SCORE_WIDTH
               for n in range(1, 30) for k in (1, 4, 16, 64))
