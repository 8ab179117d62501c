"""Regressions for the store/settings review: F4 saves merge and in one transaction, stored
sampling reaches every front end, hostile argv, imports, foreign databases and search
highlights give one clean line or a normalised row (never an internal error)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.config import Settings
from localr1.paths import app_paths
from localr1.store import Store, StoreError
from localr1.store import params as stored_params
from localr1.store.transfer import EXPORT_FORMAT, EXPORT_VERSION
from localr1.tui.conversation_settings import ConversationSettings
from tests.test_history_cli import _root

RUN_PARAMS = {"temperature": 0.6, "top_k": 10, "seed": 5, "min_p": 0.05,
              "batch_id": "b-1", "record_id": "r-7"}


def export_of(conversation: dict, messages: list | None = None) -> dict:
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
            "conversation": {"title": "t", **conversation},
            "messages": messages if messages is not None else
            [{"id": 1, "parent_id": None, "role": "user", "content": "hi"}]}


# ---- 1, 8: F4 settings merge into the stored params, in one transaction --------------------


def test_update_settings_keeps_the_params_it_does_not_name(tmp_path: Path) -> None:
    with Store.open(tmp_path / "h.db") as store:
        c = store.create_conversation(params=RUN_PARAMS, system_prompt="old")
        edited = ConversationSettings.of(c, Settings())
        store.update_settings(c.id, {**edited.edited_params(), "temperature": 0.2},
                              system_prompt="new")
        saved = store.conversation(c.id)
    assert saved.params == {**RUN_PARAMS, "temperature": 0.2, "top_p": 0.95, "max_tokens": 0,
                            "reasoning_budget": -1, "context_size": 8192, "gpu_layers": "auto"}
    assert saved.system_prompt == "new"


def test_update_settings_is_all_or_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "h.db") as store:
        c = store.create_conversation(params=RUN_PARAMS, system_prompt="old")
        with pytest.raises(StoreError, match="temperature"):
            store.update_settings(c.id, {"temperature": 99.0}, system_prompt="new")
        kept = store.conversation(c.id)
        with pytest.raises(StoreError, match="no conversation 999"):
            store.update_settings(999, {}, system_prompt="x")
    assert (kept.system_prompt, kept.params) == ("old", RUN_PARAMS)


def test_the_chat_app_generates_with_the_stored_top_k_min_p_and_seed(tmp_path: Path) -> None:
    # as `run -c` does: both go through turn_sampling
    config = Settings()
    with Store.open(tmp_path / "h.db") as store:
        c = store.create_conversation(params=RUN_PARAMS)
    params = ConversationSettings.of(c, config).generation_params(config)
    assert (params.top_k, params.min_p, params.seed) == (10, 0.05, 5)
    fresh = ConversationSettings.defaults(config).generation_params(config)
    assert (fresh.top_k, fresh.min_p, fresh.seed) == (0, 0.0, None)
    assert stored_params.turn_sampling(c.params, {"seed": 9, "top_k": None})["seed"] == 9
    assert stored_params.turn_sampling(c.params, {"seed": 9, "top_k": None})["top_k"] == 10


# ---- 3: text that is not UTF-8 ---------------------------------------------------------------


def test_text_sqlite_cannot_encode_is_a_store_error(tmp_path: Path) -> None:
    with Store.open(tmp_path / "h.db") as store:
        c = store.create_conversation()
        with pytest.raises(StoreError, match="not valid UTF-8"):
            store.add_message(c.id, "user", "caf\udce9")


def test_run_with_a_prompt_and_system_that_are_not_utf8(r1_prefill_model: Path,
                                                        tmp_path: Path) -> None:
    db = tmp_path / "argv.db"
    env = {**os.environ, "LOCALR1_DB": str(db), "LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"}
    result = subprocess.run([sys.executable, "-m", "localr1", "run", "-m",
                             str(r1_prefill_model), "--json", "-s", b"be n\xefce",
                             b"caf\xe9"], capture_output=True, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode()
    cid = json.loads(result.stdout)["conversation_id"]
    with Store.open(db) as store:
        conversation = store.conversation(cid)
        user = store.branch(cid)[0]
    assert user.content == "caf\ufffd"
    assert conversation.system_prompt == "be n\ufffdce"


# ---- 4: integers past a float's range ------------------------------------------------------


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2^1024"])
def test_an_import_with_a_huge_integer_setting_is_one_line(tmp_path: Path, value: int) -> None:
    with Store.open(tmp_path / "h.db") as store:
        for name in ("seed", "top_k", "temperature"):
            with pytest.raises(StoreError, match=f"{name} cannot be an integer past 64 bits"):
                store.import_conversations(export_of({"params": {name: value}}))
        with pytest.raises(StoreError, match="seed cannot be"):
            store.create_conversation(params={"seed": value})


# ---- 5: another program's SQLite file ----------------------------------------------------------


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path,
                                                         read_only: bool) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a localr1 history database"):
        Store.open(path, read_only=read_only)
    assert path.read_bytes() == before  # not migrated, not switched to WAL
    assert not Path(f"{path}-wal").exists()


def test_history_list_refuses_a_foreign_file(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    monkeypatch.setenv("LOCALR1_DB", str(path))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    conn.close()
    result = CliRunner().invoke(_root, ["history", "list"])
    assert result.exit_code == 1
    assert "not a localr1 history database" in result.output
    assert result.output.count("\n") == 1


def test_empty_and_own_files_still_open(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with Store.open(empty, read_only=True) as store:
        assert store.list_conversations() == []
    with Store.open(empty, read_only=True) as store:  # now migrated: opens read-only
        assert store.read_only


# ---- 6: imported titles and timestamps -----------------------------------------------------


def test_imported_titles_are_one_line(tmp_path: Path) -> None:
    with Store.open(tmp_path / "h.db") as store:
        [cid] = store.import_conversations(export_of({"title": "real\n   42  fake row\n"}))
        [blank] = store.import_conversations(export_of({"title": " \n "}))
        assert store.conversation(cid).title == "real"
        assert store.conversation(blank).title is None


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("text", ["9999-99-99", "yesterday", "", "2024-13-01T00:00:00"])
def test_imported_times_that_are_not_times_are_refused(tmp_path: Path, field: str,
                                                       text: str) -> None:
    with Store.open(tmp_path / "h.db") as store:
        with pytest.raises(StoreError, match=f"'{field}' is not an ISO-8601 time"):
            store.import_conversations(export_of({field: text}))
        with pytest.raises(StoreError, match="'created_at' is not an ISO-8601 time"):
            store.import_conversations(export_of({}, [
                {"id": 1, "parent_id": None, "role": "user", "content": "hi",
                 "created_at": text}]))
        assert store.list_conversations() == []


def test_imported_times_are_stored_as_utc_and_sort_right(tmp_path: Path) -> None:
    with Store.open(tmp_path / "h.db") as store:
        mine = store.create_conversation(first_user_message="mine")
        [old] = store.import_conversations(export_of(
            {"created_at": "2020-01-01T10:00:00+02:00", "updated_at": "2020-01-02 03:04"},
            [{"id": 1, "parent_id": None, "role": "user", "content": "hi",
              "created_at": "2020-01-01T10:00:00-05:00"}]))
        imported = store.conversation(old)
        assert imported.created_at == "2020-01-01T08:00:00.000000+00:00"
        assert imported.updated_at == "2020-01-02T03:04:00.000000+00:00"
        assert store.branch(old)[0].created_at == "2020-01-01T15:00:00.000000+00:00"
        assert store.latest_conversation_id() == mine.id  # `run -c` goes on with the newest


# ---- 7: search highlights -------------------------------------------------------------------


def test_stored_marker_characters_do_not_fake_highlights() -> None:
    with Store.open(app_paths().db_path) as store:
        store.create_conversation(first_user_message="a \x02fake\x03 hit on sunlight")
    result = CliRunner().invoke(_root, ["history", "search", "sunlight"], color=True)
    assert result.exit_code == 0, result.output
    snippet = result.output.splitlines()[1]
    bold = re.findall(r"\x1b\[1m(?:\x1b\[\d+m)*(.*?)\x1b\[0m", snippet)
    assert bold == ["sunlight"], snippet
    assert "fake" in snippet
