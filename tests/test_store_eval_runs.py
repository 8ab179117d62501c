"""`localr1 eval` runs in the history database: migration m005 from every earlier version,
adding, listing and each model's last run, and values refused on the way in."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from localr1.store import EvalRunRecord, Store, StoreError
from localr1.store.schema import known_migrations, schema_version

FIXTURES = Path(__file__).parent / "fixtures"
EARLIER = [FIXTURES / f"store_v{n}.db" for n in range(1, 5)]
DIGEST = "d" * 64


def _run(**changes) -> dict:
    """A valid run; `changes` replace its values."""
    run = {"model": "tiny-r1", "set_name": "quick", "set_digest": DIGEST, "problems": 6,
           "samples": 4, "pass_at_1": 5 / 6, "ci_low": 0.55, "ci_high": 0.95,
           "cons_at_k": 5 / 6, "format_rate": 1.0, "mean_reasoning_tokens": 12.5,
           "seconds_per_sample": 0.8,
           "params": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 512, "seed": 123},
           "solved": ["p1", "p2", "p3", "p4", "p5"], "results_path": "/tmp/out.jsonl",
           "started_at": "2025-04-01T10:00:00+00:00",
           "finished_at": "2025-04-01T10:05:00+00:00"}
    return {**run, **changes}


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.db") as opened:
        yield opened


def _plain(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


# ---- the migration ----------------------------------------------------------------------------


def test_the_schema_is_at_version_5_with_m005_last() -> None:
    assert schema_version() == 5
    assert known_migrations()[-1] == "m005_eval_runs"


@pytest.mark.parametrize("fixture", EARLIER, ids=lambda p: p.name)
def test_each_earlier_version_migrates_to_v5_keeping_its_data(fixture: Path,
                                                              tmp_path: Path) -> None:
    path = tmp_path / fixture.name
    shutil.copy(fixture, path)
    conversations = "SELECT id, title, model, updated_at FROM conversations ORDER BY id"
    messages = "SELECT id, conversation_id, parent_id, role, content, reasoning, " \
        "finish_reason FROM messages ORDER BY id"
    before = (_plain(path, conversations), _plain(path, messages))
    assert not _plain(path, "SELECT 1 FROM sqlite_master WHERE name = 'eval_runs'")
    with Store.open(path) as store:
        assert store.eval_runs() == [] and store.last_eval_scores() == {}
        added = store.add_eval_run(**_run())
        assert store.eval_runs() == [added]
    assert (_plain(path, conversations), _plain(path, messages)) == before
    assert [r[0] for r in _plain(path, "SELECT name FROM _sqlite_migrations ORDER BY id")] == \
        known_migrations()
    columns = [r[1] for r in _plain(path, "PRAGMA table_info(eval_runs)")]
    assert columns == ["id", "model", "set_name", "set_digest", "problems", "samples",
                       "pass_at_1", "ci_low", "ci_high", "cons_at_k", "format_rate",
                       "mean_reasoning_tokens", "seconds_per_sample", "params", "solved",
                       "results_path", "started_at", "finished_at"]
    index = _plain(path, "PRAGMA index_info(eval_runs_model)")
    assert [r[2] for r in index] == ["model", "finished_at"]
    assert _plain(path, "PRAGMA integrity_check") == [("ok",)]


def test_the_v5_fixture_reads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "store_v5.db"
    shutil.copy(FIXTURES / "store_v5.db", path)
    with Store.open(path) as store:
        runs = store.eval_runs()
        assert [(r.id, r.model, r.set_name) for r in runs] == [
            (2, "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M", "quick"),
            (3, "DeepSeek-R1-Distill-Llama-8B-Q4_K_M", "gsm8k"),
            (1, "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M", "quick")]
        newest = runs[0]
        assert (newest.problems, newest.samples, newest.pass_at_1, newest.ci_low,
                newest.ci_high) == (6, 4, 5 / 6, 0.6, 0.95)
        assert newest.params == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096,
                                 "seed": 2}
        assert newest.solved == ("add-1", "mod-2", "frac-3", "alg-4", "count-5")
        assert newest.finished_at == "2025-03-05T10:02:00.000000+00:00"
        llama = runs[1]
        assert (llama.ci_low, llama.mean_reasoning_tokens, llama.seconds_per_sample,
                llama.solved, llama.params) == (None, None, None, (), {})
        last = store.last_eval_scores()
        assert {name: run.id for name, run in last.items()} == {
            "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M": 2, "DeepSeek-R1-Distill-Llama-8B-Q4_K_M": 3}
        assert len(store.list_conversations(include_archived=True)) == 3


def test_a_read_only_open_before_m005_has_no_runs(tmp_path: Path) -> None:
    path = tmp_path / "store_v4.db"
    shutil.copy(FIXTURES / "store_v4.db", path)
    with Store.open(path, read_only=True) as store:
        assert store.eval_runs() == [] and store.last_eval_scores() == {}
        with pytest.raises(StoreError):
            store.add_eval_run(**_run())
    assert not _plain(path, "SELECT 1 FROM sqlite_master WHERE name = 'eval_runs'")


def test_a_read_only_open_of_v5_lists_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "store_v5.db"
    shutil.copy(FIXTURES / "store_v5.db", path)
    with Store.open(path, read_only=True) as store:
        assert [r.id for r in store.eval_runs(limit=2)] == [2, 3]


# ---- add, list, last --------------------------------------------------------------------------


def test_a_run_reads_back_as_written(store: Store) -> None:
    added = store.add_eval_run(**_run())
    assert isinstance(added, EvalRunRecord)
    expected = {**_run(), "id": added.id, "solved": ("p1", "p2", "p3", "p4", "p5"),
                "started_at": "2025-04-01T10:00:00.000000+00:00",
                "finished_at": "2025-04-01T10:05:00.000000+00:00"}
    assert added == EvalRunRecord(**expected)
    assert store.eval_runs() == [added]
    assert json.loads(json.dumps(added.as_dict()))["solved"] == list(added.solved)


def test_defaults_finish_now_and_start_at_the_finish(store: Store) -> None:
    before = datetime.now(UTC)
    added = store.add_eval_run(**{k: v for k, v in _run().items()
                                  if k not in ("started_at", "finished_at", "ci_low",
                                               "ci_high", "params", "solved",
                                               "results_path", "mean_reasoning_tokens",
                                               "seconds_per_sample")})
    finished = datetime.fromisoformat(added.finished_at)
    assert before <= finished <= datetime.now(UTC)
    assert added.started_at == added.finished_at
    assert (added.ci_low, added.ci_high, added.params, added.solved, added.results_path) == \
        (None, None, {}, (), None)


def test_times_are_stored_as_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    added = store.add_eval_run(**_run(
        started_at=datetime(2025, 4, 1, 12, 0, tzinfo=plus_two),
        finished_at="2025-04-01T12:30:00+02:00"))
    assert (added.started_at, added.finished_at) == (
        "2025-04-01T10:00:00.000000+00:00", "2025-04-01T10:30:00.000000+00:00")
    naive = store.add_eval_run(**_run(finished_at=datetime(2025, 4, 2, 8, 0)))
    assert naive.finished_at == "2025-04-02T08:00:00.000000+00:00"


def test_listing_is_newest_first_filtered_and_limited(store: Store) -> None:
    # Added out of order: the listing goes by when a run finished, not by id.
    middle = store.add_eval_run(**_run(finished_at="2025-04-02T00:00:00+00:00"))
    newest = store.add_eval_run(**_run(model="r1:7b-q4_k_m",
                                       finished_at="2025-04-03T00:00:00+00:00"))
    oldest = store.add_eval_run(**_run(finished_at="2025-04-01T00:00:00+00:00"))
    assert [r.id for r in store.eval_runs()] == [newest.id, middle.id, oldest.id]
    assert [r.id for r in store.eval_runs(limit=2)] == [newest.id, middle.id]
    assert store.eval_runs(limit=0) == []
    assert [r.id for r in store.eval_runs(limit=None)] == [newest.id, middle.id, oldest.id]
    assert [r.id for r in store.eval_runs(model="tiny-r1")] == [middle.id, oldest.id]
    assert [r.id for r in store.eval_runs(model="R1:7B-Q4_K_M")] == [newest.id]
    assert store.eval_runs(model="nobody") == []
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(StoreError, match="limit"):
            store.eval_runs(limit=bad)


def test_last_scores_hold_each_models_newest_run(store: Store) -> None:
    store.add_eval_run(**_run(pass_at_1=0.25, finished_at="2025-04-03T00:00:00+00:00"))
    older = store.add_eval_run(**_run(pass_at_1=0.5, finished_at="2025-04-01T00:00:00+00:00"))
    other = store.add_eval_run(**_run(model="r1:7b-q4_k_m", set_name="gsm8k", samples=1))
    # Two runs finished at the same moment: the one stored later wins.
    store.add_eval_run(**_run(model="tie", pass_at_1=0.1))
    tie = store.add_eval_run(**_run(model="tie", pass_at_1=0.9))
    last = store.last_eval_scores()
    assert set(last) == {"tiny-r1", "r1:7b-q4_k_m", "tie"}
    assert last["tiny-r1"].pass_at_1 == 0.25 and last["tiny-r1"].id != older.id
    assert last["r1:7b-q4_k_m"] == other
    assert last["tie"] == tie


def test_runs_written_through_another_connection_are_seen(store: Store) -> None:
    with Store.open(store.path) as other:
        other.add_eval_run(**_run())
    assert [r.model for r in store.eval_runs()] == ["tiny-r1"]


# ---- refused on the way in --------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "says"), [
    ({"pass_at_1": math.nan}, "pass_at_1 must be a finite number"),
    ({"pass_at_1": 1.01}, "pass_at_1 must be between 0 and 1"),
    ({"pass_at_1": -0.01}, "pass_at_1 must be between 0 and 1"),
    ({"pass_at_1": None}, "pass_at_1 must be a number"),
    ({"pass_at_1": True}, "pass_at_1 must be a number"),
    ({"pass_at_1": "0.5"}, "pass_at_1 must be a number"),
    ({"cons_at_k": math.inf}, "cons_at_k must be a finite number"),
    ({"cons_at_k": 2}, "cons_at_k must be between 0 and 1"),
    ({"format_rate": -math.inf}, "format_rate must be a finite number"),
    ({"format_rate": 10**400}, "format_rate must be a finite number"),
    ({"ci_low": math.nan}, "ci_low must be a finite number"),
    ({"ci_high": 1.5}, "ci_high must be between 0 and 1"),
    ({"ci_low": None}, "both ends"),
    ({"ci_high": None}, "both ends"),
    ({"ci_low": 0.9, "ci_high": 0.1}, "upside down"),
    ({"mean_reasoning_tokens": -1}, "cannot be negative"),
    ({"mean_reasoning_tokens": math.nan}, "mean_reasoning_tokens must be a finite number"),
    ({"seconds_per_sample": math.inf}, "seconds_per_sample must be a finite number"),
    ({"problems": 0}, "problems must be a whole number of at least 1"),
    ({"problems": 2.0}, "problems must be a whole number"),
    ({"samples": -4}, "samples must be a whole number of at least 1"),
    ({"samples": 2**63}, "samples must be a whole number"),
    ({"model": ""}, "model must be non-empty text"),
    ({"model": "  "}, "model must be non-empty text"),
    ({"model": None}, "model must be non-empty text"),
    ({"set_name": "bad\ud800"}, "set_name must be non-empty text"),
    ({"set_digest": ""}, "set_digest must be non-empty text"),
    ({"params": {"temperature": math.nan}}, "params must be plain JSON"),
    ({"params": {"when": datetime(2025, 1, 1)}}, "params must be plain JSON"),
    ({"params": {1: 2}}, "params must be an object"),
    ({"params": ["temperature"]}, "params must be an object"),
    ({"solved": [1, 2]}, "solved must list problem ids as text"),
    ({"solved": ["p1", "p1"]}, "solved lists a problem twice"),
    ({"solved": [f"p{i}" for i in range(7)]}, "7 problems solved out of 6"),
    ({"started_at": "yesterday"}, "started_at is not an ISO-8601 time"),
    ({"finished_at": 1714000000}, "finished_at must be a time"),
    ({"results_path": ""}, "results_path must be non-empty text"),
])
def test_bad_values_are_one_line_store_errors_and_nothing_is_written(store: Store, changes,
                                                                     says) -> None:
    with pytest.raises(StoreError, match=says) as caught:
        store.add_eval_run(**_run(**changes))
    assert "\n" not in str(caught.value)
    assert store.eval_runs() == []


def test_the_table_checks_rates_even_for_other_writers(store: Store) -> None:
    store.add_eval_run(**_run())
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE eval_runs SET pass_at_1 = 1.5")
    with sqlite3.connect(store.path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE eval_runs SET samples = 0")


def test_unreadable_json_left_by_another_writer_reads_as_empty(store: Store) -> None:
    added = store.add_eval_run(**_run())
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE eval_runs SET params = '{not json', solved = '[1, \"p2\", null]'")
    (read,) = store.eval_runs()
    assert (read.id, read.params, read.solved) == (added.id, {}, ("p2",))
