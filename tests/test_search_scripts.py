"""Search finds Japanese, Chinese and emoji (trigram index, LIKE for 1-2 characters), through
store.search, the TUI's prefix search and `localr1 history search`, on new and upgraded DBs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.history import history
from localr1.store import Store
from localr1.store import search as search_module
from localr1.store.search import needs_substring

FIXTURES = Path(__file__).parent / "fixtures"
JAPANESE = "今日は日本語の勉強をしました。このテキストはテストです。"
CHINESE = "我们用中文聊天，也说 Python 和 Rust。"
ROCKET = "Launch day 🚀 went well"


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.db") as opened:
        yield opened


@pytest.fixture
def chats(store: Store) -> dict[str, int]:
    jp = store.create_conversation(first_user_message="日本語を教えて")
    store.add_message(jp.id, "assistant", JAPANESE, reasoning="ユーザーは日本語を学びたい。")
    zh = store.create_conversation(first_user_message=CHINESE)
    store.add_message(zh.id, "assistant", "好的，我们继续。", reasoning="用户想练习中文对话。")
    rocket = store.create_conversation(title="Rocket launch")
    store.add_message(rocket.id, "user", ROCKET)
    sky = store.create_conversation(first_user_message="Why is the sky blue?")
    return {"jp": jp.id, "zh": zh.id, "rocket": rocket.id, "sky": sky.id}


def _found(store: Store, query: str, **options) -> set[tuple[int, int | None]]:
    return {(hit.conversation_id, hit.message_id) for hit in store.search(query, **options)}


def test_which_words_need_substring_search() -> None:
    assert needs_substring("日本語") and needs_substring("テキスト") and needs_substring("🚀")
    assert needs_substring("한국어를") and needs_substring("Python入門")
    assert not needs_substring("sky") and not needs_substring("café") and not needs_substring("^x")


def test_japanese_whole_word_and_in_the_middle_of_a_sentence(store: Store,
                                                             chats: dict[str, int]) -> None:
    hits = store.search("日本語")
    assert {h.conversation_id for h in hits} == {chats["jp"]}
    assert any(h.message_id is None and h.snippet == "**日本語**を教えて" for h in hits)
    (hit,) = store.search("テキスト")  # unicode61 saw "このテキストはテストです" as one word
    assert hit.conversation_id == chats["jp"] and hit.role == "assistant"
    assert "**テキスト**" in hit.snippet
    assert store.search("勉強をしました")[0].message_id == hit.message_id


def test_chinese_and_a_two_character_query(store: Store, chats: dict[str, int]) -> None:
    assert {h.conversation_id for h in store.search("中文")} == {chats["zh"]}
    assert store.search("练习") == []  # reasoning only on request
    (hit,) = store.search("练习", include_reasoning=True)
    assert hit.snippet == "用户想**练习**中文对话。"
    assert {h.conversation_id for h in store.search("中文聊天")} == {chats["zh"]}
    assert store.search("中文 勉強") == []  # every word must match


def test_emoji(store: Store, chats: dict[str, int]) -> None:
    (hit,) = store.search("🚀")
    assert hit.conversation_id == chats["rocket"]
    assert hit.snippet == "Launch day **🚀** went well"
    assert _found(store, "launch 🚀") == {(chats["rocket"], hit.message_id)}


def test_english_words_mixed_with_cjk(store: Store, chats: dict[str, int]) -> None:
    both = _found(store, "Python 中文")
    assert {cid for cid, _ in both} == {chats["zh"]}
    assert _found(store, "Python 日本語") == set()
    (hit,) = [h for h in store.search("rust 中文聊天") if h.message_id is not None]
    assert "**Rust**" in hit.snippet and "**中文聊天**" in hit.snippet
    # English words keep whole-word matching next to a CJK word.
    assert _found(store, "Pyth 中文") == set()
    assert {cid for cid, _ in _found(store, "中文 Pyth", prefix=True)} == {chats["zh"]}


def test_the_tuis_prefix_search_finds_them_too(store: Store, chats: dict[str, int]) -> None:
    # The sidebar's Ctrl+F: prefix=True, reasoning included.
    options = {"prefix": True, "include_reasoning": True}
    assert {h.conversation_id for h in store.search("テキスト", **options)} == {chats["jp"]}
    assert {h.conversation_id for h in store.search("日本", **options)} == {chats["jp"]}
    assert {h.conversation_id for h in store.search("🚀", **options)} == {chats["rocket"]}
    assert {h.conversation_id for h in store.search("sk", **options)} == {chats["sky"]}


def test_punctuation_and_hostile_text_around_cjk(store: Store, chats: dict[str, int]) -> None:
    assert {h.conversation_id for h in store.search("「日本語」")} == {chats["jp"]}
    assert {h.conversation_id for h in store.search('"中文"')} == {chats["zh"]}
    for query in ("「」", "。", '日本語" OR "x', "日本語 NEAR(", "中\x00文", "%中", "中_",
                  "\\中", "日本語" * 5000, "🚀" * 3000, "日本語 ***"):
        for hit in store.search(query, include_reasoning=True, prefix=True):
            assert isinstance(hit.snippet, str)
    assert store.search("「」") == []
    assert store.search("中%文") == [] and store.search("中_文") == []


def test_ranking_prefers_denser_matches(store: Store) -> None:
    c = store.create_conversation(title="notes")
    store.add_message(c.id, "user", "日本語" + "。ほかの話" * 40)
    dense = store.add_message(c.id, "user", "日本語、日本語、日本語")
    hits = store.search("日本語")
    assert hits[0].message_id == dense.id and len(hits) == 2
    store.add_message(c.id, "user", "中文" + "，别的" * 40)
    short_dense = store.add_message(c.id, "user", "中文中文")
    assert store.search("中文")[0].message_id == short_dense.id


def test_edits_and_deletes_keep_the_index_in_step(store: Store) -> None:
    c = store.create_conversation(first_user_message="Question")
    writer = store.assistant_writer(c.id, parent_id=store.branch(c.id)[0].id, model="r1",
                                    flush_interval=0)
    writer.add("answer", "ストリーミング中")
    writer.add("answer", "の回答")
    writer.finish("stop")
    assert [h.message_id for h in store.search("中の回答")] == [store.branch(c.id)[-1].id]
    store.delete_conversation(c.id)
    assert store.search("中の回答") == [] and store.search("回答") == []


def test_short_queries_read_a_bounded_window(store: Store,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    c = store.create_conversation(title="many")
    old = store.add_message(c.id, "user", "古い中文")
    for n in range(5):
        store.add_message(c.id, "user", f"filler {n}")
    monkeypatch.setattr(search_module, "SCAN_WINDOW", 3)
    assert store.search("中文") == []  # older than the newest 3 messages
    monkeypatch.setattr(search_module, "SCAN_WINDOW", 100)
    assert [h.message_id for h in store.search("中文")] == [old.id]
    assert [h.message_id for h in store.search("古い中文")] == [old.id]  # indexed: any age


@pytest.mark.parametrize("fixture", ["store_v1.db", "store_v2.db"])
def test_old_databases_get_the_new_index_on_first_open(fixture: str, tmp_path: Path) -> None:
    path = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, path)
    with Store.open(path) as store:
        # Built from the rows already there (no CJK in them: an English substring shows it).
        rows = store._db().execute(
            "SELECT rowid FROM messages_trigram WHERE messages_trigram MATCH 'ayleig'").fetchall()
        assert rows and "Rayleigh" in store.message(rows[0][0]).content
        assert store._db().execute(
            "SELECT count(*) FROM conversations_trigram WHERE conversations_trigram "
            "MATCH 'ourdoug'").fetchone()[0] == 1
        sky = next(c for c in store.list_conversations() if c.title == "Why is the sky blue?")
        store.add_message(sky.id, "user", "The sky: 空はなぜ青いのですか？")
        assert {h.conversation_id for h in store.search("青いの")} == {sky.id}
        assert {h.conversation_id for h in store.search("sky 青い")} == {sky.id}


def test_a_read_only_open_before_the_upgrade_still_finds_cjk(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "store_v2.db", path)
    with Store.open(path) as store:  # add CJK text, then take the upgrade away again
        c = store.create_conversation(first_user_message="日本語のテキスト")
        db = store._db()
        for table in ("messages", "conversations"):
            db.execute(f"DROP TABLE {table}_trigram")
            for suffix in ("ai", "ad", "au"):
                db.execute(f"DROP TRIGGER {table}_trigram_{suffix}")
        db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_trigram_search'")
    with Store.open(path, read_only=True) as store:
        assert not store._db()["messages_trigram"].exists()
        assert {h.conversation_id for h in store.search("テキスト")} == {c.id}
        # Every CJK word goes through LIKE here: its wildcards are plain characters.
        assert store.search("日本%テキスト") == [] and store.search("日本語_テキスト") == []


# ---- `localr1 history search` --------------------------------------------------------------


def _cli(*args: str) -> str:
    result = CliRunner().invoke(history, ["search", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def app_chats() -> dict[str, int]:
    with Store.open() as store:  # the app's database, under the per-test LOCALR1_HOME
        jp = store.create_conversation(first_user_message="日本語を教えて")
        store.add_message(jp.id, "assistant", JAPANESE)
        zh = store.create_conversation(first_user_message=CHINESE)
        rocket = store.create_conversation(title="Rocket launch")
        store.add_message(rocket.id, "user", ROCKET)
        return {"jp": jp.id, "zh": zh.id, "rocket": rocket.id}


def test_cli_history_search_finds_cjk_and_emoji(app_chats: dict[str, int]) -> None:
    for query, expected in (("日本語", "jp"), ("テキスト", "jp"), ("中文", "zh"), ("🚀", "rocket"),
                            ("Python 中文", "zh")):
        hits = json.loads(_cli(*query.split(), "--json"))
        assert hits, query
        assert {h["conversation_id"] for h in hits} == {app_chats[expected]}, query
    assert "**テキスト**" in json.loads(_cli("テキスト", "--json"))[0]["snippet"]
    text = _cli("テキスト")
    assert text.splitlines()[0].split()[0] == str(app_chats["jp"])
    assert "テキスト" in text.splitlines()[1]
    assert _cli("日本語", "Rust") == "No matches.\n"


def test_cli_history_search_in_a_real_process(app_chats: dict[str, int]) -> None:
    out = subprocess.run([sys.executable, "-m", "localr1", "history", "search", "テキスト"],
                         capture_output=True, text=True, encoding="utf-8", timeout=60,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[0] == str(app_chats["jp"])
