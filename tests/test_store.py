"""The conversation store: schema and migrations, crash safety, concurrency, tree, search."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localr1.chat_message import ChatMessage
from localr1.errors import LocalR1Error
from localr1.paths import app_paths
from localr1.store import Message, Store, StoreError
from localr1.store.records import title_from_text
from localr1.store.schema import known_migrations, schema_version
from localr1.store.search import fts_query
from localr1.store.transfer import EXPORT_FORMAT

FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = ['"', '""', "'", "AND", "OR", "NOT", "a OR", "a AND", "NOT a", "*", "a*", "*a",
           "NEAR(", "NEAR(a b)", "NEAR", "col:x", "content:x", "{content}:x", "-x", "^x", "+x",
           "(((", ")))", "()", "a:", ":", "\\", "%", "_", "[", "]", "{", "}", "x\x00y", "é*",
           '"unterminated', "a NEAR/2 b", "rowid", "messages_fts", "'; DROP TABLE messages;--"]


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "history.db") as opened:
        yield opened


@pytest.fixture(scope="module")
def search_store(tmp_path_factory: pytest.TempPathFactory):
    """A store with a few searchable conversations (read-only in the tests that use it)."""
    with Store.open(tmp_path_factory.mktemp("search") / "history.db") as opened:
        sky = opened.create_conversation(first_user_message="Why is the sky blue?")
        opened.add_message(sky.id, "assistant", "Rayleigh scattering of sunlight by air.",
                           reasoning="Recall the wavelength dependence of scattering.")
        opened.add_message(sky.id, "user", "And sunsets? Sunsets sunsets.")
        bread = opened.create_conversation(first_user_message="A sourdough bread recipe")
        opened.add_message(bread.id, "assistant", "Mix flour, water and salt. Bake.",
                           reasoning="A sunset-free answer; think about hydration levels.")
        opened.create_conversation(title="Bake day plans")
        yield opened


def _rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read with a separate, plain sqlite3 connection (as another process would)."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---- opening, files, pragmas, migrations ---------------------------------------------------


def test_open_creates_private_db_at_app_path(_isolated_localr1_home: Path) -> None:
    path = app_paths().db_path
    assert not path.parent.exists()
    with Store.open() as store:
        store.create_conversation(first_user_message="hello")
        assert store.path == path
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                assert side.stat().st_mode & 0o777 == 0o600


def test_localr1_db_overrides_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCALR1_DB", str(tmp_path / "elsewhere" / "chats.db"))
    with Store.open() as store:
        assert store.path == tmp_path / "elsewhere" / "chats.db"
    assert (tmp_path / "elsewhere" / "chats.db").is_file()


def test_existing_file_permissions_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    Store.open(path).close()
    path.chmod(0o640)
    Store.open(path).close()
    assert path.stat().st_mode & 0o777 == 0o640


def test_pragmas_on_every_threads_connection(store: Store) -> None:
    def pragmas() -> tuple:
        db = store._db()
        return tuple(db.execute(f"PRAGMA {name}").fetchone()[0]
                     for name in ("journal_mode", "foreign_keys", "busy_timeout"))

    assert pragmas() == ("wal", 1, 5000)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(pragmas()))
    worker.start()
    worker.join()
    assert seen == [("wal", 1, 5000)]


def test_migrations_from_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    Store.open(path).close()
    tables = {row[0] for row in _rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "messages", "conversations_fts", "messages_fts",
            "_sqlite_migrations"} <= tables
    applied = _rows(path, "SELECT migration_set, name FROM _sqlite_migrations ORDER BY id")
    assert applied == [("localr1", name) for name in known_migrations()]
    Store.open(path).close()  # a second open applies nothing
    assert len(_rows(path, "SELECT * FROM _sqlite_migrations")) == len(applied)
    indexes = {row[0] for row in _rows(path, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"conversations_listing", "messages_conversation"} <= indexes


def test_there_is_a_fixture_for_the_current_schema_version() -> None:
    # Adding a migration? Run tests/fixtures/make_store_fixture.py and commit the new file.
    assert (FIXTURES / f"store_v{schema_version()}.db").is_file()


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("store_v*.db")), ids=lambda p: p.name)
def test_every_earlier_schema_version_opens_and_migrates(fixture: Path, tmp_path: Path) -> None:
    path = tmp_path / fixture.name
    shutil.copy(fixture, path)
    with Store.open(path) as store:
        assert store._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conversations = store.list_conversations(include_archived=True)
        assert {c.title for c in conversations} >= {"Why is the sky blue?", "Sourdough starter"}
        for c in conversations:
            store.branch(c.id)
            store.export_conversation(c.id)
        assert store.search("sky")
        new = store.create_conversation(first_user_message="still writable")
        assert store.branch(new.id)[0].content == "still writable"
    applied = [r[0] for r in _rows(path, "SELECT name FROM _sqlite_migrations")]
    assert applied == known_migrations()


def test_v1_fixture_reads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "store_v1.db"
    shutil.copy(FIXTURES / "store_v1.db", path)
    with Store.open(path) as store:
        listed = store.list_conversations()
        assert [(c.title, c.pinned, c.message_count) for c in listed] == [
            ("Why is the sky blue?", True, 5), (None, False, 0)]
        sky = listed[0]
        assert sky.params == {"temperature": 0.6, "top_p": 0.95}
        assert sky.system_prompt == "Answer briefly."
        assert sky.updated_at == "2025-03-01T10:05:00.000000+00:00"
        shown = store.branch(sky.id)
        assert [m.content for m in shown] == [
            "Why is the sky blue?", "Sunlight scatters off air molecules; blue the most."]
        answer = shown[1]
        assert (answer.thinking_seconds, answer.prompt_tokens, answer.tokens_per_second,
                answer.finish_reason) == (2.0, 12, 30.5, "stop")
        assert [m.content[:9] for m in store.alternates(answer.id)] == ["Rayleigh ", "Sunlight "]
        edited = store.alternates(shown[0].id)
        assert len(edited) == 2
        interrupted = store.branch(sky.id, edited[1].id + 1)
        assert interrupted[-1].finish_reason == "incomplete"
        archived = [c for c in store.list_conversations(include_archived=True) if c.archived]
        assert [c.title for c in archived] == ["Sourdough starter"]
        stopped = store.branch(archived[0].id)
        assert [m.batch_id for m in stopped] == ["batch-1", "batch-1"]
        assert stopped[-1].finish_reason == "cancelled"
        assert "(interrupted)" not in store.conversation_markdown(sky.id)
        store.set_active_leaf(sky.id, edited[1].id)
        assert "**Assistant** (interrupted)" in store.conversation_markdown(sky.id)


def test_a_database_from_a_newer_localr1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('localr1', 'm999_from_the_future', '2030-01-01')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer localr1"):
        Store.open(path)


def test_a_file_that_is_not_sqlite_is_a_one_line_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database\n" + os.urandom(4000))
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert isinstance(caught.value, LocalR1Error)
    assert "\n" not in message
    assert str(path) in message and "not a SQLite database" in message


def test_a_folder_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="folder"):
        Store.open(tmp_path)


def test_an_unreadable_file_is_a_store_error(tmp_path: Path) -> None:
    # Root reads any file; as root (CI) the open runs in a child without the capabilities
    # that bypass file permissions (util-linux's setpriv).
    path = tmp_path / "locked.db"
    Store.open(path).close()
    path.chmod(0)
    code = ("import sys\nfrom localr1.store import Store, StoreError\n"
            "try:\n    Store.open(sys.argv[1])\nexcept StoreError as e:\n"
            "    print(str(e)); sys.exit(3)\n")
    command = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--",
                   *command]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert result.stdout.count("\n") == 1 and str(path) in result.stdout


def test_a_full_disk_is_a_one_line_store_error(store: Store) -> None:
    conversation = store.create_conversation(first_user_message="hi")
    db = store._db()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # this connection now sees a full disk
    with pytest.raises(StoreError) as caught:
        store.add_message(conversation.id, "user", "x" * 1_000_000)
    assert "full" in str(caught.value) and "\n" not in str(caught.value)
    assert len(store.branch(conversation.id)) == 1  # nothing half-written


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "h.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_conversations()


# ---- conversations and titles --------------------------------------------------------------


def test_title_from_text() -> None:
    assert title_from_text("  Why is\tthe sky   blue?  \nmore") == "Why is the sky blue?"
    assert title_from_text("\n\n  \nsecond line") == "second line"
    assert title_from_text("   ") is None
    long = title_from_text("word " * 40)
    assert long is not None and len(long) <= 60 and long.endswith("…")
    assert title_from_text("x" * 100) == "x" * 59 + "…"


def test_create_conversation_takes_its_title_from_the_first_user_message(store: Store) -> None:
    c = store.create_conversation(model="r1-7b", system_prompt="Be brief.",
                                  params={"temperature": 0.6},
                                  first_user_message="Plan a trip to Kyoto\nin autumn")
    assert c.title == "Plan a trip to Kyoto"
    assert (c.model, c.system_prompt, c.params, c.message_count) == \
        ("r1-7b", "Be brief.", {"temperature": 0.6}, 1)
    assert c.active_leaf_id == store.branch(c.id)[0].id
    assert c.created_at.endswith("+00:00")


def test_an_untitled_conversation_is_titled_by_its_first_user_message(store: Store) -> None:
    c = store.create_conversation()
    assert c.title is None
    store.add_message(c.id, "system", "You are terse.")
    store.add_message(c.id, "user", "First question")
    store.add_message(c.id, "user", "Second question")
    assert store.conversation(c.id).title == "First question"
    store.rename(c.id, "  My trip  ")
    store.add_message(c.id, "user", "Third")
    assert store.conversation(c.id).title == "My trip"
    with pytest.raises(StoreError, match="empty"):
        store.rename(c.id, "  ")


def test_listing_pinned_first_then_newest(store: Store) -> None:
    a = store.create_conversation(first_user_message="a")
    b = store.create_conversation(first_user_message="b")
    c = store.create_conversation(first_user_message="c")
    store.add_message(a.id, "assistant", "a is now the newest")
    store.set_pinned(b.id, True)
    assert [x.id for x in store.list_conversations()] == [b.id, a.id, c.id]
    assert store.latest_conversation_id() == a.id
    store.set_archived(a.id, True)
    assert [x.id for x in store.list_conversations()] == [b.id, c.id]
    assert [x.id for x in store.list_conversations(include_archived=True)] == [b.id, a.id, c.id]
    assert [x.id for x in store.list_conversations(limit=1, offset=1)] == [c.id]
    assert store.latest_conversation_id() == c.id
    listed = {x.id: x for x in store.list_conversations(include_archived=True)}
    assert (listed[a.id].archived, listed[b.id].pinned, listed[a.id].message_count) == \
        (True, True, 2)


def test_missing_ids_are_store_errors(store: Store) -> None:
    for call in (lambda: store.conversation(99), lambda: store.rename(99, "x"),
                 lambda: store.set_pinned(99, True), lambda: store.delete_conversation(99),
                 lambda: store.add_message(99, "user", "x"), lambda: store.branch(99),
                 lambda: store.export_conversation(99)):
        with pytest.raises(StoreError, match="no conversation 99"):
            call()
    with pytest.raises(StoreError, match="no message 42"):
        store.alternates(42)
    assert store.latest_conversation_id() is None
    c = store.create_conversation()
    assert store.branch(c.id) == []
    with pytest.raises(StoreError, match="no message 42 in conversation"):
        store.add_message(c.id, "user", "x", parent_id=42)
    with pytest.raises(StoreError, match="unknown role"):
        store.add_message(c.id, "robot", "x")


def test_delete_cascades_to_messages_and_the_search_index(store: Store) -> None:
    c = store.create_conversation(first_user_message="zebra crossing")
    store.add_message(c.id, "assistant", "zebra answer", reasoning="zebra thoughts")
    keep = store.create_conversation(first_user_message="keep me")
    store.delete_conversation(c.id)
    db = store._db()
    assert db.execute("SELECT count(*) FROM messages WHERE conversation_id = ?",
                      (c.id,)).fetchone()[0] == 0
    assert store.search("zebra", include_reasoning=True) == []
    assert [x.id for x in store.list_conversations()] == [keep.id]
    with pytest.raises(StoreError):
        store.conversation(c.id)


# ---- the message tree ----------------------------------------------------------------------


def test_regenerate_and_edit_make_alternates(store: Store) -> None:
    c = store.create_conversation(first_user_message="Q1")
    q1 = store.branch(c.id)[0]
    a1 = store.add_message(c.id, "assistant", "A1")
    assert a1.parent_id == q1.id and a1.finish_reason == "stop"
    q2 = store.add_message(c.id, "user", "Q2")
    a2 = store.add_message(c.id, "assistant", "A2")
    # Regenerate A1: a second assistant child of Q1 (the new branch is shown).
    a1b = store.add_message(c.id, "assistant", "A1 again", parent_id=q1.id)
    assert [m.content for m in store.branch(c.id)] == ["Q1", "A1 again"]
    assert [m.id for m in store.alternates(a1b.id)] == [a1.id, a1b.id]
    # Edit Q1: a second user child of the same parent (here: a new root).
    q1b = store.add_message(c.id, "user", "Q1 edited", parent_id=None)
    assert [m.id for m in store.alternates(q1.id)] == [q1.id, q1b.id]
    assert [m.content for m in store.branch(c.id)] == ["Q1 edited"]
    # Browsing back to A1 shows its newest descendant leaf.
    store.set_active_leaf(c.id, a1.id)
    assert store.conversation(c.id).active_leaf_id == a2.id
    assert [m.content for m in store.branch(c.id)] == ["Q1", "A1", "Q2", "A2"]
    # The default parent is the active leaf.
    q3 = store.add_message(c.id, "user", "Q3")
    assert q3.parent_id == a2.id
    assert [m.content for m in store.branch(c.id, leaf_id=q2.id)] == ["Q1", "A1", "Q2"]
    assert store.conversation(c.id).message_count == 7
    other = store.create_conversation(first_user_message="other")
    with pytest.raises(StoreError):
        store.set_active_leaf(other.id, a1.id)
    with pytest.raises(StoreError):
        store.branch(other.id, leaf_id=a1.id)


def test_a_null_active_leaf_means_the_newest_leaf(store: Store) -> None:
    c = store.create_conversation(first_user_message="Q")
    q = store.branch(c.id)[0]
    store.add_message(c.id, "assistant", "old")
    store.add_message(c.id, "assistant", "new", parent_id=q.id)
    store._db().execute("UPDATE conversations SET active_leaf_id = NULL")
    assert store.branch(c.id)[-1].content == "new"
    assert store.add_message(c.id, "user", "next").parent_id == store.branch(c.id)[-2].id


def test_to_chat_message(store: Store) -> None:
    c = store.create_conversation(first_user_message="Q")
    a = store.add_message(c.id, "assistant", "A", reasoning="R")
    assert a.to_chat_message() == ChatMessage("assistant", "A", "R")
    assert [m.to_chat_message() for m in store.branch(c.id)][0] == ChatMessage("user", "Q")


def test_threads_share_one_store(store: Store) -> None:
    conversations = [store.create_conversation(first_user_message=f"t{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(conversation_id: int) -> None:
        try:
            for i in range(30):
                store.add_message(conversation_id, "assistant" if i % 2 else "user", f"m{i}")
                store.list_conversations()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c.id,)) for c in conversations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(len(store.branch(c.id)) == 31 for c in conversations)


# ---- streaming answers ---------------------------------------------------------------------


def test_writer_creates_the_row_at_the_first_token_and_flushes_on_time(store: Store) -> None:
    c = store.create_conversation(model="m", first_user_message="Tell me")
    user = store.branch(c.id)[0]
    interval = 0.1
    writer = store.assistant_writer(c.id, parent_id=user.id, model="m", flush_interval=interval)
    assert writer.message_id is None
    writer.add("reasoning", "Let me think. ")
    assert writer.message_id is not None
    row = _rows(store.path, "SELECT reasoning, finish_reason FROM messages WHERE id = ?",
                (writer.message_id,))
    assert row == [("Let me think. ", "incomplete")]
    assert store.conversation(c.id).active_leaf_id == writer.message_id

    added: list[tuple[float, int]] = []  # (when, answer length so far)
    answer = ""
    stale: list[float] = []
    changes = set()
    start = time.monotonic()
    while time.monotonic() - start < 0.8:
        token = f"w{len(added)} "
        before = time.monotonic()  # read before add(), so a slow machine cannot fail this
        writer.add("answer", token)
        answer += token
        added.append((time.monotonic(), len(answer)))
        saved = _rows(store.path, "SELECT content FROM messages WHERE id = ?",
                      (writer.message_id,))[0][0]
        assert answer.startswith(saved)
        changes.add(saved)
        # Everything added more than one flush interval ago must be on disk.
        due = max((n for t, n in added if t <= before - interval), default=0)
        if len(saved) < due:
            stale.append(before - start)
        time.sleep(0.01)
    assert stale == []
    assert len(changes) >= 4  # flushed repeatedly, not only at the end
    done = writer.finish("stop", prompt_tokens=5, completion_tokens=len(added) + 3,
                         reasoning_tokens=3, ttft_ms=50.0, tokens_per_second=25.0)
    assert (done.content, done.reasoning, done.finish_reason) == \
        (answer, "Let me think. ", "stop")
    assert done.thinking_seconds is not None and done.thinking_seconds >= 0
    assert (done.prompt_tokens, done.ttft_ms, done.tokens_per_second) == (5, 50.0, 25.0)
    assert store.branch(c.id)[-1] == done
    with pytest.raises(RuntimeError):
        writer.add("answer", "late")


def test_writer_finish_without_tokens_creates_the_row(store: Store) -> None:
    c = store.create_conversation(first_user_message="Q")
    user = store.branch(c.id)[0]
    writer = store.assistant_writer(c.id, parent_id=user.id, model="m")
    done = writer.finish("cancelled")
    assert (done.content, done.reasoning, done.finish_reason, done.parent_id) == \
        ("", None, "cancelled", user.id)
    assert writer.message_id == done.id
    with pytest.raises(StoreError, match="unknown finish reason"):
        store.assistant_writer(c.id, parent_id=user.id, model="m").finish("exploded")


def test_writer_as_context_manager_records_errors(store: Store) -> None:
    c = store.create_conversation(first_user_message="Q")
    user = store.branch(c.id)[0]
    with pytest.raises(ValueError), \
            store.assistant_writer(c.id, parent_id=user.id, model="m") as writer:
        writer.add("answer", "partial")
        raise ValueError("engine failed")
    assert store.message(writer.message_id).finish_reason == "error"
    assert store.message(writer.message_id).content == "partial"

    def stream():  # a caller that stops reading a generator cancels the answer
        with store.assistant_writer(c.id, parent_id=user.id, model="m") as streaming:
            for i in range(10):
                streaming.add("answer", f"t{i} ")
                yield streaming.message_id

    tokens = stream()
    message_id = next(tokens)
    next(tokens)
    tokens.close()
    assert (store.message(message_id).finish_reason, store.message(message_id).content) == \
        ("cancelled", "t0 t1 ")


_STREAMER = r"""
import sys, time
from pathlib import Path
from localr1.store import Store
store = Store.open(Path(sys.argv[1]))
c = store.create_conversation(model="m", first_user_message="Tell me a long story")
user = store.branch(c.id)[0]
writer = store.assistant_writer(c.id, parent_id=user.id, model="m", flush_interval=0.2)
for i in range(10):
    writer.add("reasoning", f"thought{i} ")
    time.sleep(0.01)
print("streaming", flush=True)
i = 0
while True:
    writer.add("answer", f"word{i} ")
    i += 1
    time.sleep(0.01)
"""


def test_kill_9_mid_answer_leaves_the_partial_answer(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    child = subprocess.Popen([sys.executable, "-c", _STREAMER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "streaming\n"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            saved = _rows(path, "SELECT content FROM messages WHERE role = 'assistant'")
            if saved and saved[0][0].count("word") >= 20:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the answer was never flushed while streaming")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with Store.open(path) as store:
        assert store._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (conversation,) = store.list_conversations()
        user, answer = store.branch(conversation.id)
        assert (user.role, user.content) == ("user", "Tell me a long story")
        assert answer.role == "assistant" and answer.finish_reason == "incomplete"
        assert answer.content.startswith("word0 word1 ") and answer.content.count("word") >= 20
        assert answer.reasoning is not None and answer.reasoning.startswith("thought0 ")
        assert "(interrupted)" in store.conversation_markdown(conversation.id)


_WRITER = r"""
import sys, time
from pathlib import Path
from localr1.store import Store
path, name, start_at = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
while time.time() < start_at:
    time.sleep(0.001)
store = Store.open(path)  # both open (and migrate) a brand-new file at the same moment
c = store.create_conversation(model=name)
for i in range(100):
    store.add_message(c.id, "user", f"{name} question {i}")
    writer = store.assistant_writer(c.id, parent_id=store.branch(c.id)[-1].id, model=name,
                                    flush_interval=0)
    writer.add("reasoning", "hmm ")
    writer.add("answer", f"{name} answer {i}")
    writer.finish("stop")
store.close()
print("done")
"""


def test_two_processes_writing_at_once_never_see_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "history.db"
    start_at = time.time() + 1.5
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name,
                                  str(start_at)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for name in ("alpha", "beta")]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert "locked" not in err
        assert child.returncode == 0, err
        assert out == "done\n"
    with Store.open(path) as store:
        conversations = store.list_conversations()
        assert sorted(c.model for c in conversations) == ["alpha", "beta"]
        for c in conversations:
            shown = store.branch(c.id)
            assert len(shown) == 200 == c.message_count
            assert shown[-1].content == f"{c.model} answer 99"
        assert store._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---- search --------------------------------------------------------------------------------


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('say "hi" AND') == '"say" """hi""" "AND"'
    assert fts_query("   ") == ""
    assert fts_query("blue gree", prefix=True) == '"blue" "gree"*'
    assert fts_query("gree ---", prefix=True) == '"gree" "---"'


def test_prefix_search_matches_words_being_typed(search_store: Store) -> None:
    whole = {hit.conversation_id for hit in search_store.search("sky")}
    assert whole and not search_store.search("sk")
    assert {hit.conversation_id for hit in search_store.search("sk", prefix=True)} >= whole


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_search_strings_never_raise(search_store: Store, query: str) -> None:
    search_store.search(query)
    search_store.search(query, include_reasoning=True)
    search_store.search(f"sky {query}")
    search_store.search(query, prefix=True)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_search_text_never_raises(search_store: Store, query: str) -> None:
    for hit in search_store.search(query, limit=5):
        assert isinstance(hit.snippet, str)
    search_store.search(query, limit=5, prefix=True)


def test_empty_queries_find_nothing(search_store: Store) -> None:
    assert search_store.search("") == []
    assert search_store.search(" \t\n") == []
    assert search_store.search("sky", limit=0) == []


def test_search_ranks_and_snippets(search_store: Store) -> None:
    hits = search_store.search("sunsets")
    assert [h.snippet for h in hits] == ["And **sunsets**? **Sunsets** **sunsets**."]
    assert hits[0].role == "user" and hits[0].title == "Why is the sky blue?"
    hits = search_store.search("sky", highlight=("<", ">"))
    kinds = {(h.message_id is None, h.snippet) for h in hits}
    assert (True, "Why is the <sky> blue?") in kinds  # a title hit
    assert (False, "Why is the <sky> blue?") in kinds  # and the message itself
    ranks = [h.rank for h in hits]
    assert ranks == sorted(ranks)
    assert search_store.search("scattering bake") == []  # every word must match
    bake = {(h.message_id is None, h.title) for h in search_store.search("bake")}
    assert bake == {(True, "Bake day plans"), (False, "A sourdough bread recipe")}


def test_reasoning_is_searched_only_on_request(search_store: Store) -> None:
    assert search_store.search("wavelength") == []
    (hit,) = search_store.search("wavelength", include_reasoning=True)
    assert "**wavelength**" in hit.snippet and hit.role == "assistant"
    # Content still ranks on its own when reasoning is included.
    assert search_store.search("scattering", include_reasoning=True)[0].snippet.startswith(
        "Rayleigh **scattering**")


def test_search_ranking_prefers_denser_matches(store: Store) -> None:
    c = store.create_conversation(title="notes")
    store.add_message(c.id, "user", "llama " + "filler " * 40)
    dense = store.add_message(c.id, "user", "llama llama llama")
    store.add_message(c.id, "user", "llama in the middle of a longer sentence here")
    hits = store.search("llama")
    assert hits[0].message_id == dense.id
    assert len(hits) == 3


# ---- export, import, markdown --------------------------------------------------------------


def _tree(store: Store) -> int:
    c = store.create_conversation(model="r1", system_prompt="Be kind.", params={"seed": 7},
                                  first_user_message="Q1")
    q1 = store.branch(c.id)[0]
    store.add_message(c.id, "assistant", "A1", reasoning="R1", model="r1", thinking_seconds=12.4,
                      prompt_tokens=3, completion_tokens=9, reasoning_tokens=4, ttft_ms=80.0,
                      tokens_per_second=22.5, batch_id="b1")
    store.add_message(c.id, "assistant", "A1 again", parent_id=q1.id, model="r1",
                      finish_reason="cancelled")
    store.add_message(c.id, "user", "Q1 edited", parent_id=None)
    writer = store.assistant_writer(c.id, parent_id=store.branch(c.id)[-1].id, model="r1",
                                    flush_interval=0)
    writer.add("reasoning", "thinking")
    writer.add("answer", "half an ans")  # never finished: 'incomplete'
    store.set_pinned(c.id, True)
    store.set_active_leaf(c.id, q1.id + 1)
    return c.id


def _without_ids(export: dict) -> dict:
    """An export with its ids replaced by positions, to compare exports of different ids."""
    position = {m["id"]: n for n, m in enumerate(export["messages"])}
    messages = [{**m, "id": position[m["id"]],
                 "parent_id": None if m["parent_id"] is None else position[m["parent_id"]]}
                for m in export["messages"]]
    conversation = {**export["conversation"], "id": None,
                    "active_leaf_id": position.get(export["conversation"]["active_leaf_id"])}
    return {**export, "conversation": conversation, "messages": messages}


def test_export_import_round_trip_with_alternates(store: Store) -> None:
    original = _tree(store)
    exported = store.export_conversation(original)
    assert exported["format"] == EXPORT_FORMAT and exported["version"] == 1
    assert len(exported["messages"]) == 5
    text = json.dumps(exported)  # JSON-able
    new_id = store.import_conversation(json.loads(text))
    assert new_id != original
    again = store.export_conversation(new_id)
    assert _without_ids(again) == _without_ids(exported)
    assert again["conversation"]["id"] == new_id
    assert [m.content for m in store.branch(new_id)] == ["Q1", "A1"]
    assert store.conversation(new_id).pinned
    assert {m["id"] for m in again["messages"]}.isdisjoint({m["id"] for m in
                                                            exported["messages"]})


def test_import_accepts_lists_and_bundles_all_or_nothing(store: Store) -> None:
    exported = store.export_conversation(_tree(store))
    ids = store.import_conversations([exported, exported])
    assert len(ids) == 2
    bundle = {"format": "localr1-conversations", "version": 1, "conversations": [exported]}
    assert len(store.import_conversations(bundle)) == 1
    before = len(store.list_conversations())
    broken = json.loads(json.dumps(exported))
    broken["messages"][2]["role"] = "wizard"
    with pytest.raises(StoreError, match="conversation 2: message"):
        store.import_conversations([exported, broken])
    assert len(store.list_conversations()) == before


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format="something-else"), "not a localr1 export"),
    (lambda d: d.update(version=99), "unsupported export version 99"),
    (lambda d: d.update(messages="nope"), "'messages' must be a list"),
    (lambda d: d["conversation"].update(pinned="yes"), "'pinned' has the wrong type"),
    (lambda d: d["conversation"].update(colour="red"), "unknown conversation field 'colour'"),
    (lambda d: d["conversation"].update(active_leaf_id=12345), "active_leaf_id 12345"),
    (lambda d: d["messages"][1].update(role="wizard"), "role must be one of"),
    (lambda d: d["messages"][1].update(parent_id=12345), "parent 12345 is not in the export"),
    (lambda d: d["messages"][1].update(prompt_tokens=True), "'prompt_tokens' has the wrong"),
    (lambda d: d["messages"][1].update(finish_reason="boom"), "unknown finish_reason"),
    (lambda d: d["messages"][1].pop("id"), "needs an integer 'id'"),
    (lambda d: d["messages"][1].update(id=d["messages"][0]["id"]), "appears twice"),
    (lambda d: d["messages"][0].update(parent_id=d["messages"][1]["id"]), "form a cycle"),
    (lambda d: d["messages"].append("text"), "is not an object"),
])
def test_import_validation_is_one_line(store: Store, change, message: str) -> None:
    data = json.loads(json.dumps(store.export_conversation(_tree(store))))
    change(data)
    with pytest.raises(StoreError, match="invalid import") as caught:
        store.import_conversation(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_import_refuses_what_is_not_an_export(store: Store) -> None:
    with pytest.raises(StoreError, match="nothing to import"):
        store.import_conversations([])
    with pytest.raises(StoreError, match="not a localr1 export"):
        store.import_conversation("nope")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="'conversations' must be a list"):
        store.import_conversations({"format": "localr1-conversations", "conversations": 3})


def test_conversation_markdown(store: Store) -> None:
    c = _tree(store)
    md = store.conversation_markdown(c)
    assert md.startswith("# Q1\n\n**System**\n\nBe kind.\n\n**User**\n\nQ1\n\n**Assistant**\n\nA1")
    assert "<details>" not in md
    md = store.conversation_markdown(c, include_reasoning=True)
    assert "<details><summary>Thought for 12.4 s</summary>\n\nR1\n\n</details>\n\nA1" in md
    store.set_active_leaf(c, store.branch(c)[1].id + 1)  # the cancelled alternate
    assert "**Assistant** (stopped)\n\nA1 again" in store.conversation_markdown(c)
    edited = [m for m in store.export_conversation(c)["messages"] if m["content"] == "Q1 edited"]
    store.set_active_leaf(c, edited[0]["id"])
    md = store.conversation_markdown(c, include_reasoning=True)
    assert "**Assistant** (interrupted)" in md and "half an ans" in md


def test_message_fields_match_the_schema(store: Store) -> None:
    columns = [r[1] for r in store._db().execute("PRAGMA table_info(messages)").fetchall()]
    assert columns == [f for f in Message.__dataclass_fields__]
