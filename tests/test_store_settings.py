"""A conversation's system prompt and sampling settings: stored (migration m002), upgraded
from v1 files, exported and imported, and applied by `localr1 run -c/--cid`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.paths import app_paths
from localr1.store import Store, StoreError
from tests.fixtures import scripted_models as sm

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = {"temperature": 0.3, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "max_tokens": 700,
            "seed": 42, "reasoning_budget": 128}


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.db") as opened:
        yield opened


def _columns(path: Path, conversation_id: int) -> dict:
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM conversations WHERE id = ?",
                                 (conversation_id,)).fetchone())
    finally:
        conn.close()


def test_settings_round_trip_through_the_store(store: Store, tmp_path: Path) -> None:
    c = store.create_conversation(first_user_message="hi")
    store.set_params(c.id, {**SETTINGS, "context_size": 2048, "gpu_layers": "auto"})
    store.set_system_prompt(c.id, "Answer in French.")
    store.close()
    with Store.open(tmp_path / "history.db") as reopened:
        again = reopened.conversation(c.id)
        assert again.params == {**SETTINGS, "context_size": 2048, "gpu_layers": "auto"}
        assert again.system_prompt == "Answer in French."
        # The sampling settings are typed columns; the rest stays JSON.
        row = _columns(tmp_path / "history.db", c.id)
        assert {name: row[name] for name in SETTINGS} == SETTINGS
        assert json.loads(row["params"]) == {"context_size": 2048, "gpu_layers": "auto"}
        # set_params replaces; None and a blank system prompt mean "not set".
        reopened.set_params(c.id, {"temperature": 1, "seed": None})
        reopened.set_system_prompt(c.id, "  ")
        again = reopened.conversation(c.id)
        assert again.params == {"temperature": 1.0} and again.system_prompt is None


@pytest.mark.parametrize("params", [
    {"temperature": 5.5}, {"temperature": float("nan")}, {"top_p": 0}, {"min_p": 1.0},
    {"top_k": -1}, {"top_k": 2.5}, {"max_tokens": True}, {"seed": 2**63},
    {"reasoning_budget": -2}, {"temperature": "hot"}, {"other": float("inf")},
    {"other": 2**64}, {"other": "\ud800"}, {"other": [[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]},
])
def test_settings_a_run_would_refuse_are_refused(store: Store, params: dict) -> None:
    c = store.create_conversation(params={"temperature": 0.7})
    with pytest.raises(StoreError, match="params"):
        store.set_params(c.id, params)
    with pytest.raises(StoreError, match="params"):
        store.create_conversation(params=params)
    assert store.conversation(c.id).params == {"temperature": 0.7}
    with pytest.raises(StoreError, match="no conversation 999"):
        store.set_params(999, {})
    with pytest.raises(StoreError, match="no conversation 999"):
        store.set_system_prompt(999, "x")


def test_the_v1_fixture_is_upgraded_with_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "store_v1.db"
    shutil.copy(FIXTURES / "store_v1.db", path)
    # A v1 file whose params hold a value no version could use (it is dropped on upgrade).
    conn = sqlite3.connect(path)
    conn.execute("""UPDATE conversations SET params = '{"top_k": -5, "context_size": 1024}'
                    WHERE title IS NULL""")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        sky, empty = store.list_conversations()
        assert sky.params == {"temperature": 0.6, "top_p": 0.95}
        assert sky.system_prompt == "Answer briefly."
        assert empty.params == {"context_size": 1024}
        store.set_params(sky.id, {**sky.params, "seed": 3})
        assert store.conversation(sky.id).params == {"temperature": 0.6, "top_p": 0.95,
                                                     "seed": 3}
    row = _columns(path, sky.id)
    assert (row["temperature"], row["top_p"], row["seed"], row["params"]) == (0.6, 0.95, 3, "{}")
    assert json.loads(_columns(path, empty.id)["params"]) == {"context_size": 1024}


def test_the_v2_fixture_keeps_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "store_v2.db"
    shutil.copy(FIXTURES / "store_v2.db", path)
    with Store.open(path) as store:
        sky = store.list_conversations()[0]
        assert sky.params == {"temperature": 0.6, "top_p": 0.95, "max_tokens": 500, "seed": 7,
                              "context_size": 8192}


def test_nan_left_in_an_old_params_column_is_dropped(store: Store, tmp_path: Path) -> None:
    c = store.create_conversation(params={"context_size": 4096})
    store._db().execute("UPDATE conversations SET params = ? WHERE id = ?",
                        ('{"context_size": NaN, "ratio": Infinity, "name": "x"}', c.id))
    assert store.conversation(c.id).params == {"name": "x"}


def test_export_and_import_carry_the_settings(store: Store) -> None:
    c = store.create_conversation(system_prompt="Be brief.",
                                  params={**SETTINGS, "context_size": 1024},
                                  first_user_message="hi")
    exported = store.export_conversation(c.id)
    assert exported["conversation"]["params"] == {**SETTINGS, "context_size": 1024}
    copy = store.conversation(store.import_conversation(json.loads(json.dumps(exported))))
    assert copy.params == {**SETTINGS, "context_size": 1024}
    assert copy.system_prompt == "Be brief."
    exported["conversation"]["params"]["top_p"] = 7
    with pytest.raises(StoreError, match="invalid import: params: top_p cannot be 7"):
        store.import_conversation(exported)


# ---- `localr1 run -c / --cid` applies them ---------------------------------------------------


def localr1(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input="",
                          capture_output=True, text=True, timeout=120)


def test_run_continues_with_the_stored_settings_and_flags_win(r1_prefill_model: Path) -> None:
    first = json.loads(localr1("run", "-m", r1_prefill_model, "--json", "hi").stdout)
    cid = first["conversation_id"]
    assert first["reasoning"] == sm.REASONING_TEXT
    with Store.open(app_paths().db_path) as store:
        # As the TUI's F4 saves them: no thinking, at most 500 tokens.
        store.set_params(cid, {"reasoning_budget": 0, "max_tokens": 500, "temperature": 0.1})
        store.set_system_prompt(cid, "Answer in one short sentence, please.")
    second = localr1("run", "--cid", cid, "--json", "again")
    assert second.returncode == 0, second.stderr
    applied = json.loads(second.stdout)
    assert applied["reasoning"] == "" and applied["answer"] == sm.ANSWER_TEXT
    # The stored system prompt is folded into the first user turn, which is sent again.
    plain = json.loads(localr1("run", "-m", r1_prefill_model, "--json", "hi").stdout)
    plain_again = json.loads(localr1("run", "-c", "--json", "again").stdout)
    system_tokens = applied["usage"]["prompt_tokens"] - plain_again["usage"]["prompt_tokens"]
    assert system_tokens >= 5
    # A flag typed on the command line wins over the stored value (for this turn only).
    third = json.loads(localr1("run", "--cid", cid, "--reasoning-budget", "-1", "--json",
                               "more").stdout)
    assert third["reasoning"] == sm.REASONING_TEXT
    fourth = json.loads(localr1("run", "--cid", cid, "--json", "more").stdout)
    assert fourth["reasoning"] == ""
    # --system replaces the stored prompt from now on.
    assert localr1("run", "--cid", cid, "--system", "Be terse.", "x").returncode == 0
    with Store.open(app_paths().db_path) as store:
        assert store.conversation(cid).system_prompt == "Be terse."
        assert store.conversation(cid).params["temperature"] == 0.1
        assert store.conversation(plain["conversation_id"]).system_prompt is None


@pytest.mark.parametrize("cid, message", [
    ("9223372036854775808", "no conversation 9223372036854775808"),
    ("-1", "not a conversation id: '-1' (ids are positive whole numbers)"),
    ("abc", "not a conversation id: 'abc' (ids are positive whole numbers)"),
    ("0", "no conversation 0"),
    ("9" * 5000, "no conversation 999999999999999999999999…"),
])
def test_run_cid_that_cannot_be_an_id_is_one_line(cid: str, message: str) -> None:
    result = localr1("run", "--cid", cid, "-m", "whatever", "hi")
    assert result.returncode == 1
    assert result.stderr == f"Error: {message}\n"
