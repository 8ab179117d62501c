"""Conversation history in one SQLite file: crash-safe, searchable, safe to share.

Layout: `conversations` and `messages`; messages form a tree (regenerate/edit add siblings),
and a conversation's `active_leaf_id` picks the branch shown (NULL = its newest leaf). FTS5
indexes titles and message content + reasoning (kept in sync by triggers).

Crash safety: every write is its own short `BEGIN IMMEDIATE` transaction in a WAL database, so
a user message is on disk before generation starts and a streaming answer (see
`AssistantMessageWriter`) at most `flush_interval` seconds behind; after a crash or `kill -9`
the partial answer is there with finish_reason 'incomplete'.

Threads: one sqlite connection per thread (threading.local), each in its own sqlite-utils
`Database`, so the CLI, the TUI's workers and a batch runner can share one `Store`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal, TypeVar

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from localr1.chat_message import ChatMessage
from localr1.errors import LocalR1Error

ROLES = ("system", "user", "assistant")
FINISH_REASONS = ("stop", "length", "cancelled", "error", "incomplete")
TITLE_LENGTH = 60
BUSY_TIMEOUT_MS = 5000
RANK_WINDOW = 2000  # search ranks at most this many (the newest) matching messages
EXPORT_FORMAT = "localr1-conversation"
EXPORT_BUNDLE_FORMAT = "localr1-conversations"  # `history export --all --format json`
EXPORT_VERSION = 1

# How long a writer keeps retrying "database is locked" after busy_timeout gave up.
_LOCKED_RETRY_SECONDS = 20.0
_STAT_FIELDS = ("thinking_seconds", "finish_reason", "prompt_tokens", "completion_tokens",
                "reasoning_tokens", "ttft_ms", "tokens_per_second")

T = TypeVar("T")


class StoreError(LocalR1Error):
    """The history database cannot be opened, read or written, or an id/import is invalid."""


# ---- values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str | None
    model: str | None
    system_prompt: str | None
    params: dict[str, Any]
    created_at: str  # ISO-8601 UTC
    updated_at: str
    pinned: bool
    archived: bool
    active_leaf_id: int | None  # None = the newest leaf
    message_count: int | None = None  # all messages, alternates included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    parent_id: int | None
    role: str  # "system" | "user" | "assistant"
    content: str
    reasoning: str | None
    thinking_seconds: float | None
    model: str | None
    finish_reason: str | None  # None for user/system; 'incomplete' = interrupted mid-answer
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    ttft_ms: float | None
    tokens_per_second: float | None
    created_at: str
    batch_id: str | None

    def to_chat_message(self) -> ChatMessage:
        return ChatMessage(self.role, self.content, self.reasoning)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int | None  # None for a title hit
    title: str | None
    snippet: str  # matches wrapped in the `highlight` pair given to search()
    rank: float  # bm25: lower (more negative) is better
    role: str | None = None  # the message's role; None for a title hit

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_MESSAGE_COLUMNS = tuple(f.name for f in fields(Message))


def title_from_text(text: str, limit: int = TITLE_LENGTH) -> str | None:
    """First non-blank line, whitespace collapsed, cut at a word to `limit` chars with '…'."""
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line:
            break
    else:
        return None
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def fts_query(text: str, *, prefix: bool = False) -> str:
    """User text as an FTS5 query that cannot be a syntax error: every word a quoted phrase.

    Quoting turns AND/OR/NOT/NEAR, `*`, `:`, `-`, `^` and brackets into plain words; words that
    hold no letters or digits become empty phrases, which FTS5 ignores. With `prefix` the last
    word also matches longer words ("gree" finds "greeted"), for a filter box typed into.
    """
    text = text.replace("\x00", " ").encode("utf-8", "ignore").decode("utf-8")
    phrases = ['"' + word.replace('"', '""') + '"' for word in text.split()]
    if prefix and phrases and any(c.isalnum() for c in phrases[-1]):
        phrases[-1] += "*"
    return " ".join(phrases)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "database is locked" in text or "database is busy" in text


# ---- schema --------------------------------------------------------------------------------

MIGRATIONS = Migrations("localr1")


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    # active_leaf_id -> messages is circular on purpose: SET NULL keeps it from dangling.
    db.executescript("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT,
            model TEXT,
            system_prompt TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
            archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
            active_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            reasoning TEXT,
            thinking_seconds REAL,
            model TEXT,
            finish_reason TEXT
                CHECK (finish_reason IN ('stop', 'length', 'cancelled', 'error', 'incomplete')),
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            reasoning_tokens INTEGER,
            ttft_ms REAL,
            tokens_per_second REAL,
            created_at TEXT NOT NULL,
            batch_id TEXT
        );
        CREATE INDEX conversations_listing ON conversations (pinned DESC, updated_at DESC, id DESC);
        CREATE INDEX messages_conversation ON messages (conversation_id, parent_id);
        CREATE INDEX messages_parent ON messages (parent_id);
        CREATE INDEX messages_batch ON messages (batch_id) WHERE batch_id IS NOT NULL;
    """)
    tokenize = "unicode61 remove_diacritics 2"
    db["conversations"].enable_fts(["title"], fts_version="FTS5", create_triggers=True,
                                   tokenize=tokenize)
    db["messages"].enable_fts(["content", "reasoning"], fts_version="FTS5",
                              create_triggers=True, tokenize=tokenize)


def known_migrations() -> list[str]:
    """The names of the migrations this code knows, oldest first."""
    db = Database(memory=True)
    try:
        return [migration.name for migration in MIGRATIONS.pending(db)]
    finally:
        db.close()


def schema_version() -> int:
    """How many migrations this code knows (the N of tests/fixtures/store_vN.db)."""
    return len(known_migrations())


# ---- the store -----------------------------------------------------------------------------


class Store:
    """Thread-safe access to the history database. Open with `Store.open(path)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, Database]] = []
        self._closed = False
        self._pid = os.getpid()

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        """Open (creating if needed) and migrate the database; default `app_paths().db_path`."""
        if path is None:
            from localr1.paths import app_paths

            path = app_paths().db_path
        path = Path(path).expanduser()
        if path.is_dir():
            raise StoreError(f"cannot open the history database {path}: it is a folder")
        store = cls(path)
        try:
            created = _create_private_file(path)
            db = store._db()
            _retry_locked(lambda: db.execute("PRAGMA journal_mode = WAL").fetchall())
            store._write(store._migrate)
            if created:
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(f"{path}{suffix}", 0o600)
        except (sqlite3.Error, OSError, StoreError) as exc:
            store.close()
            reason = exc.reason if isinstance(exc, _SqliteFailure) else _open_reason(exc)
            raise StoreError(f"cannot open the history database {path}: {reason}") from None
        return store

    def _migrate(self, db: Database) -> None:
        # Runs inside _write's BEGIN IMMEDIATE, so two processes opening a new file at once
        # migrate it one after the other. (A future migration with transactional=False,
        # e.g. one that VACUUMs, would have to run after this transaction.)
        known = set(known_migrations())
        unknown = [m.name for m in MIGRATIONS.applied(db) if m.name not in known]
        if unknown:
            raise StoreError(f"it was written by a newer localr1 (migration {unknown[-1]}); "
                             "upgrade localr1")
        MIGRATIONS.apply(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _thread, db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connections and transactions --

    def _db(self) -> Database:
        """This thread's connection (made on first use)."""
        if self._closed:
            raise StoreError("the history database is closed")
        if os.getpid() != self._pid:
            # A forked child must not touch its parent's connections (not even to close
            # them: that would drop the parent's locks); it starts afresh.
            self._pid = os.getpid()
            self._local = threading.local()
            self._lock = threading.Lock()
            self._connections = []
        db = getattr(self._local, "db", None)
        if db is not None:
            return db
        # check_same_thread=False only so close() can close every thread's connection.
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error:
            conn.close()
            raise
        db = Database(conn)
        with self._lock:
            # Threads come and go (TUI workers): close the connections of finished ones.
            alive = []
            for thread, other in self._connections:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            self._connections = [*alive, (threading.current_thread(), db)]
        self._local.db = db
        return db

    def _write(self, fn: Callable[[Database], T]) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction, retrying if the file stays locked."""
        db = self._db()

        def attempt() -> T:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.conn.execute("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                raise
            return result

        try:
            return _retry_locked(attempt)
        except sqlite3.Error as exc:
            raise _SqliteFailure(exc) from None

    def _read(self, fn: Callable[[Database], T]) -> T:
        """Run `fn`'s reads in one transaction, so they all see the same snapshot."""
        db = self._db()

        def attempt() -> T:
            db.conn.execute("BEGIN")
            try:
                return fn(db)
            finally:
                if db.conn.in_transaction:
                    db.conn.execute("COMMIT")

        try:
            return _retry_locked(attempt)
        except sqlite3.Error as exc:
            raise _SqliteFailure(exc) from None

    def _rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        db = self._db()

        def read() -> list[dict[str, Any]]:
            cursor = db.execute(sql, params)
            keys = [d[0] for d in cursor.description]
            return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

        try:
            return _retry_locked(read)
        except sqlite3.Error as exc:
            raise _SqliteFailure(exc) from None

    # -- conversations --

    def create_conversation(self, *, model: str | None = None, title: str | None = None,
                            system_prompt: str | None = None,
                            params: dict[str, Any] | None = None,
                            first_user_message: str | None = None) -> Conversation:
        """A new conversation; with `first_user_message` it gets that message (and its title)."""
        if title is not None:
            title = title_from_text(title, limit=10_000)
        params_json = json.dumps(params or {})

        def insert(db: Database) -> int:
            now = _now()
            cursor = db.execute(
                "INSERT INTO conversations (title, model, system_prompt, params, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, params_json, now, now))
            conversation_id = cursor.lastrowid
            if first_user_message is not None:
                self._insert_message(db, conversation_id, "user", first_user_message,
                                     parent_id=None, values={})
            return conversation_id

        return self.conversation(self._write(insert))

    def conversation(self, id: int) -> Conversation:
        rows = self._rows(
            "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
            "AS message_count FROM conversations c WHERE c.id = ?", (id,))
        if not rows:
            raise StoreError(f"no conversation {id}")
        return _conversation(rows[0])

    def list_conversations(self, limit: int = 100, offset: int = 0,
                           include_archived: bool = False) -> list[Conversation]:
        """Pinned first, then the most recently updated."""
        where = "" if include_archived else "WHERE c.archived = 0"
        rows = self._rows(
            "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
            f"AS message_count FROM conversations c {where} "
            "ORDER BY c.pinned DESC, c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?",
            (limit, offset))
        return [_conversation(row) for row in rows]

    def latest_conversation_id(self) -> int | None:
        """The most recently updated conversation that is not archived."""
        rows = self._rows("SELECT id FROM conversations WHERE archived = 0 "
                          "ORDER BY updated_at DESC, id DESC LIMIT 1")
        return rows[0]["id"] if rows else None

    def rename(self, id: int, title: str) -> None:
        clean = title_from_text(title, limit=10_000)
        if clean is None:
            raise StoreError("a title cannot be empty")
        self._update_conversation(id, "title = ?", (clean,))

    def set_pinned(self, id: int, pinned: bool) -> None:
        self._update_conversation(id, "pinned = ?", (int(bool(pinned)),))

    def set_archived(self, id: int, archived: bool) -> None:
        self._update_conversation(id, "archived = ?", (int(bool(archived)),))

    def delete_conversation(self, id: int) -> None:
        """Deletes the conversation and (by cascade) all its messages."""
        def delete(db: Database) -> int:
            return db.execute("DELETE FROM conversations WHERE id = ?", (id,)).rowcount

        if not self._write(delete):
            raise StoreError(f"no conversation {id}")

    def _update_conversation(self, id: int, assignment: str, params: tuple) -> None:
        def update(db: Database) -> int:
            return db.execute(f"UPDATE conversations SET {assignment} WHERE id = ?",
                              (*params, id)).rowcount

        if not self._write(update):
            raise StoreError(f"no conversation {id}")

    # -- messages --

    def add_message(self, conversation_id: int, role: str, content: str, *,
                    parent_id: int | None | EllipsisType = ..., model: str | None = None,
                    reasoning: str | None = None, batch_id: str | None = None,
                    **stats: Any) -> Message:
        """Append a message (committed at once) and make it the active leaf.

        parent_id: `...` (default) = the current active leaf, None = a new root, or a message
        id (an edit or regenerate adds a sibling of an existing message). `stats` are
        thinking_seconds, finish_reason (default 'stop' for an assistant message, None
        otherwise), prompt_tokens, completion_tokens, reasoning_tokens, ttft_ms,
        tokens_per_second. An untitled conversation takes its title from the first user
        message; updated_at is bumped.
        """
        unknown = set(stats) - set(_STAT_FIELDS)
        if unknown:
            raise TypeError(f"add_message() got unexpected keyword(s): {sorted(unknown)}")
        values = {"model": model, "reasoning": reasoning, "batch_id": batch_id, **stats}
        if role == "assistant":
            values.setdefault("finish_reason", "stop")

        def insert(db: Database) -> int:
            return self._insert_message(db, conversation_id, role, content, parent_id, values)

        return self._message(self._write(insert))

    def _insert_message(self, db: Database, conversation_id: int, role: str, content: str,
                        parent_id: int | None | EllipsisType, values: dict[str, Any]) -> int:
        """Insert inside the caller's transaction; the conversation's bookkeeping too."""
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r} (use {', '.join(ROLES)})")
        finish_reason = values.get("finish_reason")
        if finish_reason is not None and finish_reason not in FINISH_REASONS:
            raise StoreError(f"unknown finish reason {finish_reason!r} "
                             f"(use {', '.join(FINISH_REASONS)})")
        row = db.execute("SELECT title FROM conversations WHERE id = ?",
                         (conversation_id,)).fetchone()
        if row is None:
            raise StoreError(f"no conversation {conversation_id}")
        if parent_id is ...:
            parent_id = _active_leaf(db, conversation_id)
        elif parent_id is not None:
            _check_message_in(db, parent_id, conversation_id)
        now = _now()
        columns = {"conversation_id": conversation_id, "parent_id": parent_id, "role": role,
                   "content": content, "created_at": now, **values}
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        message_id = db.execute(f"INSERT INTO messages ({names}) VALUES ({marks})",
                                tuple(columns.values())).lastrowid
        title = row[0]
        if title is None and role == "user":
            title = title_from_text(content)
        db.execute("UPDATE conversations SET active_leaf_id = ?, updated_at = ?, title = ? "
                   "WHERE id = ?", (message_id, now, title, conversation_id))
        return message_id

    def assistant_writer(self, conversation_id: int, *, parent_id: int | None,
                         model: str | None, flush_interval: float = 1.0,
                         batch_id: str | None = None) -> AssistantMessageWriter:
        """A writer for an answer that streams in; see `AssistantMessageWriter`."""
        self.conversation(conversation_id)  # fail now, not at the first token
        return AssistantMessageWriter(self, conversation_id, parent_id, model, flush_interval,
                                      batch_id)

    def message(self, id: int) -> Message:
        return self._message(id)

    def _message(self, id: int) -> Message:
        rows = self._rows("SELECT * FROM messages WHERE id = ?", (id,))
        if not rows:
            raise StoreError(f"no message {id}")
        return _message(rows[0])

    def branch(self, conversation_id: int, leaf_id: int | None = None) -> list[Message]:
        """The messages from the root to the active (or given) leaf, oldest first."""
        # The tree's links come from an index alone; walking them here is much faster than a
        # recursive CTE (measured: ~1 ms against ~60 ms for 500 messages in 200,000).
        def read(db: Database) -> list[dict[str, Any]]:
            row = db.execute("SELECT active_leaf_id FROM conversations WHERE id = ?",
                             (conversation_id,)).fetchone()
            if row is None:
                raise StoreError(f"no conversation {conversation_id}")
            parents = dict(db.execute("SELECT id, parent_id FROM messages "
                                      "WHERE conversation_id = ?", (conversation_id,)))
            leaf = leaf_id if leaf_id is not None else row[0]
            if leaf is None:
                leaf = _newest_leaf(parents)
            if leaf is None:
                return []
            if leaf not in parents:
                raise StoreError(f"no message {leaf} in conversation {conversation_id}")
            path: list[int] = []
            node: int | None = leaf
            while node is not None and len(path) <= len(parents):
                path.append(node)
                node = parents.get(node)
            cursor = db.execute("SELECT * FROM messages WHERE id IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(path),))
            keys = [d[0] for d in cursor.description]
            rows = {r[0]: dict(zip(keys, r, strict=True)) for r in cursor.fetchall()}
            return [rows[i] for i in reversed(path)]

        return [_message(row) for row in self._read(read)]

    def alternates(self, message_id: int) -> list[Message]:
        """The message and its siblings of the same role (same parent), oldest first."""
        message = self._message(message_id)
        rows = self._rows(
            "SELECT * FROM messages WHERE conversation_id = ? AND parent_id IS ? AND role = ? "
            "ORDER BY id", (message.conversation_id, message.parent_id, message.role))
        return [_message(row) for row in rows]

    def set_active_leaf(self, conversation_id: int, message_id: int) -> None:
        """Show the branch through `message_id`: its newest descendant leaf becomes active."""
        def update(db: Database) -> None:
            _check_message_in(db, message_id, conversation_id)
            leaf = db.execute(
                "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
                "SELECT m.id FROM messages m JOIN sub ON m.parent_id = sub.id) "
                "SELECT id FROM sub WHERE NOT EXISTS "
                "(SELECT 1 FROM messages c WHERE c.parent_id = sub.id) "
                "ORDER BY id DESC LIMIT 1", (message_id,)).fetchone()[0]
            db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?",
                       (leaf, conversation_id))

        self._write(update)

    # -- search --

    def search(self, query: str, *, limit: int = 20, include_reasoning: bool = False,
               highlight: tuple[str, str] = ("**", "**"),
               prefix: bool = False) -> list[SearchHit]:
        """Titles and message content (reasoning too on request), best bm25 first.

        Every word of `query` must match, as a plain word (FTS syntax is quoted away).
        Snippets wrap the matched words in `highlight`. Archived conversations are searched
        too. A word found in more than RANK_WINDOW messages ranks only the newest
        RANK_WINDOW of them (ranking is per matching row; this keeps a search under ~10 ms).
        """
        match = fts_query(query, prefix=prefix)
        if not match or limit <= 0:
            return []
        message_match = match if include_reasoning else f"{{content}} : ({match})"
        start, end = highlight

        def read(db: Database) -> tuple[list, list]:
            # A title sums up a whole conversation: its matches weigh double.
            titles = db.execute(
                "SELECT f.rowid, c.title, bm25(conversations_fts, 2.0) AS score, "
                "snippet(conversations_fts, 0, ?, ?, '…', 16) "
                "FROM conversations_fts f JOIN conversations c ON c.id = f.rowid "
                "WHERE conversations_fts MATCH ? ORDER BY score LIMIT ?",
                (start, end, match, limit)).fetchall()
            window = db.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
                "ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (message_match, RANK_WINDOW - 1)).fetchone()
            # Reasoning counts half when it is searched as well.
            top = db.execute(
                "SELECT rowid, bm25(messages_fts, 1.0, 0.5) AS score FROM messages_fts "
                "WHERE messages_fts MATCH ? AND rowid >= ? ORDER BY score LIMIT ?",
                (message_match, window[0] if window else 0, limit)).fetchall()
            # Snippets only for the hits we return: they are the costly part.
            messages = []
            for message_id, score in top:
                row = db.execute(
                    "SELECT m.conversation_id, m.role, c.title, "
                    "snippet(messages_fts, -1, ?, ?, '…', 16) FROM messages_fts f "
                    "JOIN messages m ON m.id = f.rowid "
                    "JOIN conversations c ON c.id = m.conversation_id "
                    "WHERE messages_fts MATCH ? AND f.rowid = ?",
                    (start, end, message_match, message_id)).fetchone()
                if row is not None:
                    messages.append((message_id, score, *row))
            return titles, messages

        try:
            titles, messages = self._read(read)
        except StoreError as exc:
            if "fts5" in str(exc):  # last resort: a query FTS5 still refuses finds nothing
                return []
            raise
        hits = [SearchHit(cid, None, title, snippet or "", rank)
                for cid, title, rank, snippet in titles]
        hits += [SearchHit(cid, mid, title, snippet or "", score, role)
                 for mid, score, cid, role, title, snippet in messages]
        hits.sort(key=lambda hit: (hit.rank, hit.message_id is not None, hit.message_id or 0))
        return hits[:limit]

    # -- export / import --

    def export_conversation(self, id: int) -> dict[str, Any]:
        """Everything, alternates included, as JSON-able data (see `import_conversation`)."""
        conversation = self.conversation(id)
        rows = self._rows("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (id,))
        data = conversation.as_dict()
        del data["message_count"]
        messages = [{k: v for k, v in row.items() if k != "conversation_id"} for row in rows]
        return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "conversation": data,
                "messages": messages}

    def import_conversation(self, data: dict[str, Any]) -> int:
        """Add an exported conversation under new ids; returns its new id."""
        return self.import_conversations(data)[0]

    def import_conversations(self, data: Any) -> list[int]:
        """One export, a list of exports, or an `--all` bundle; all or nothing."""
        exports = _unbundle(data)
        checked = [_check_export(export, n if len(exports) > 1 else None)
                   for n, export in enumerate(exports, 1)]

        def insert(db: Database) -> list[int]:
            return [_insert_export(db, conversation, messages)
                    for conversation, messages in checked]

        return self._write(insert)

    def conversation_markdown(self, id: int, *, include_reasoning: bool = False) -> str:
        """The active branch as Markdown."""
        conversation = self.conversation(id)
        parts = [f"# {conversation.title or 'Untitled conversation'}"]
        if conversation.system_prompt:
            parts.append(f"**System**\n\n{conversation.system_prompt}")
        for message in self.branch(id):
            header = f"**{message.role.capitalize()}**"
            if message.finish_reason == "incomplete":
                header += " (interrupted)"
            elif message.finish_reason == "cancelled":
                header += " (stopped)"
            body = [header]
            if include_reasoning and message.reasoning:
                body.append(f"<details><summary>{_thought_label(message.thinking_seconds)}"
                            f"</summary>\n\n{message.reasoning.strip()}\n\n</details>")
            if message.content:
                body.append(message.content.strip())
            parts.append("\n\n".join(body))
        return "\n\n".join(parts) + "\n"


def _thought_label(seconds: float | None) -> str:
    if seconds is None:
        return "Reasoning"
    return "Thought for <1 s" if seconds < 0.5 else f"Thought for {round(seconds)} s"


# ---- the streaming writer ------------------------------------------------------------------


class AssistantMessageWriter:
    """Saves an answer while it streams: the row appears at the first token (finish_reason
    'incomplete'), content and reasoning are flushed at least every `flush_interval` seconds
    (checked on each `add`), and `finish` writes the rest with the real finish reason.

    thinking_seconds, when `finish` is not given one, is measured from the first reasoning
    text to the first answer text. Use from one thread at a time (a lock guards it anyway).
    As a context manager, leaving without `finish` records 'cancelled' (KeyboardInterrupt,
    or GeneratorExit from an abandoned generator), 'error' (any other exception) or
    'incomplete' (no exception).
    """

    def __init__(self, store: Store, conversation_id: int, parent_id: int | None,
                 model: str | None, flush_interval: float, batch_id: str | None = None) -> None:
        self.message_id: int | None = None
        self._store = store
        self._conversation_id = conversation_id
        self._parent_id = parent_id
        self._model = model
        self._batch_id = batch_id
        self.flush_interval = flush_interval
        self._content: list[str] = []
        self._reasoning: list[str] | None = None
        self._dirty = False
        self._last_flush = 0.0
        self._thinking_started: float | None = None
        self._thinking_seconds: float | None = None
        self._finished = False
        self._lock = threading.Lock()

    def add(self, kind: Literal["reasoning", "answer"], text: str) -> None:
        with self._lock:
            if self._finished:
                raise RuntimeError("add() after finish()")
            now = time.monotonic()
            if kind == "reasoning":
                if self._reasoning is None:
                    self._reasoning = []
                    self._thinking_started = now
                self._reasoning.append(text)
            elif kind == "answer":
                if self._thinking_started is not None and self._thinking_seconds is None:
                    self._thinking_seconds = now - self._thinking_started
                self._content.append(text)
            else:
                raise ValueError(f"kind must be 'reasoning' or 'answer', not {kind!r}")
            self._dirty = True
            if self.message_id is None:
                self.message_id = self._store._write(
                    lambda db: self._insert(db, "incomplete", {}))
                self._last_flush = time.monotonic()
                self._dirty = False
            elif now - self._last_flush >= self.flush_interval:
                self._flush()

    def flush(self) -> None:
        """Write what came so far now (add() does this on its own once per flush_interval)."""
        with self._lock:
            if self.message_id is not None and self._dirty:
                self._flush()

    def _flush(self) -> None:
        content, reasoning = self._texts()
        message_id = self.message_id
        self._store._write(lambda db: db.execute(
            "UPDATE messages SET content = ?, reasoning = ? WHERE id = ?",
            (content, reasoning, message_id)))
        self._last_flush = time.monotonic()
        self._dirty = False

    def _texts(self) -> tuple[str, str | None]:
        reasoning = None if self._reasoning is None else "".join(self._reasoning)
        return "".join(self._content), reasoning

    def _insert(self, db: Database, finish_reason: str, stats: dict[str, Any]) -> int:
        content, reasoning = self._texts()
        values = {"model": self._model, "reasoning": reasoning, "batch_id": self._batch_id,
                  "finish_reason": finish_reason, **stats}
        return self._store._insert_message(db, self._conversation_id, "assistant", content,
                                           self._parent_id, values)

    def finish(self, finish_reason: str, *, prompt_tokens: int | None = None,
               completion_tokens: int | None = None, reasoning_tokens: int | None = None,
               ttft_ms: float | None = None, tokens_per_second: float | None = None,
               thinking_seconds: float | None = None) -> Message:
        """Write everything with the real finish reason; creates the row if no token came."""
        if finish_reason not in FINISH_REASONS:
            raise StoreError(f"unknown finish reason {finish_reason!r} "
                             f"(use {', '.join(FINISH_REASONS)})")
        with self._lock:
            if self._finished:
                raise RuntimeError("finish() called twice")
            if thinking_seconds is None and self._thinking_started is not None:
                thinking_seconds = self._thinking_seconds
                if thinking_seconds is None:  # it never got past reasoning
                    thinking_seconds = time.monotonic() - self._thinking_started
            stats = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "reasoning_tokens": reasoning_tokens, "ttft_ms": ttft_ms,
                     "tokens_per_second": tokens_per_second,
                     "thinking_seconds": thinking_seconds}
            if self.message_id is None:
                self.message_id = self._store._write(
                    lambda db: self._insert(db, finish_reason, stats))
            else:
                content, reasoning = self._texts()
                message_id = self.message_id
                columns = {"content": content, "reasoning": reasoning,
                           "finish_reason": finish_reason, **stats}
                assignments = ", ".join(f"{name} = ?" for name in columns)

                def update(db: Database) -> None:
                    db.execute(f"UPDATE messages SET {assignments} WHERE id = ?",
                               (*columns.values(), message_id))
                    db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                               (_now(), self._conversation_id))

                self._store._write(update)
            self._finished = True
            self._dirty = False
            return self._store.message(self.message_id)

    def __enter__(self) -> AssistantMessageWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._finished:
            return
        if exc_type is None:
            reason = "incomplete"
        elif issubclass(exc_type, KeyboardInterrupt | GeneratorExit):
            reason = "cancelled"  # Ctrl+C, or the caller stopped reading a generator
        else:
            reason = "error"
        self.finish(reason)


# ---- helpers -------------------------------------------------------------------------------


class _SqliteFailure(StoreError):
    """A sqlite error (full disk, corrupt file, lock held too long) as one line."""

    def __init__(self, exc: sqlite3.Error) -> None:
        self.reason = _open_reason(exc)
        super().__init__(f"history database error: {self.reason}")


def _retry_locked(fn: Callable[[], T]) -> T:
    """busy_timeout waits first; this is the last resort for a lock that outlives it."""
    deadline = time.monotonic() + _LOCKED_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _open_reason(exc: BaseException) -> str:
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or _one_line(exc)
    text = _one_line(exc)
    if "file is not a database" in text:
        return "not a SQLite database (or it is encrypted or corrupt)"
    if "malformed" in text:
        return f"the file is corrupt ({text})"
    if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
        return "another program keeps it locked; try again"
    return text


def _create_private_file(path: Path) -> bool:
    """Create missing folders (0700) and the file (0600); False if the file existed."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


def _newest_leaf(parents: dict[int, int | None]) -> int | None:
    """The highest id that is nobody's parent, given {message id: parent id}."""
    has_children = set(parents.values())
    return max((i for i in parents if i not in has_children), default=None)


def _active_leaf(db: Database, conversation_id: int) -> int | None:
    row = db.execute("SELECT active_leaf_id FROM conversations WHERE id = ?",
                     (conversation_id,)).fetchone()
    if row is None:
        raise StoreError(f"no conversation {conversation_id}")
    if row[0] is not None:
        return row[0]
    return _newest_leaf(dict(db.execute(
        "SELECT id, parent_id FROM messages WHERE conversation_id = ?", (conversation_id,))))


def _check_message_in(db: Database, message_id: int, conversation_id: int) -> None:
    row = db.execute("SELECT conversation_id FROM messages WHERE id = ?",
                     (message_id,)).fetchone()
    if row is None or row[0] != conversation_id:
        raise StoreError(f"no message {message_id} in conversation {conversation_id}")


def _conversation(row: dict[str, Any]) -> Conversation:
    try:
        params = json.loads(row["params"] or "{}")
    except ValueError:
        params = {}
    return Conversation(
        id=row["id"], title=row["title"], model=row["model"],
        system_prompt=row["system_prompt"], params=params if isinstance(params, dict) else {},
        created_at=row["created_at"], updated_at=row["updated_at"], pinned=bool(row["pinned"]),
        archived=bool(row["archived"]), active_leaf_id=row["active_leaf_id"],
        message_count=row.get("message_count"))


def _message(row: dict[str, Any]) -> Message:
    return Message(**{name: row[name] for name in _MESSAGE_COLUMNS})


# ---- import validation ---------------------------------------------------------------------

_TEXT = (str,)
_NUMBER = (int, float)
_MESSAGE_TYPES: dict[str, tuple[type, ...]] = {
    "content": _TEXT, "reasoning": _TEXT, "thinking_seconds": _NUMBER, "model": _TEXT,
    "finish_reason": _TEXT, "prompt_tokens": (int,), "completion_tokens": (int,),
    "reasoning_tokens": (int,), "ttft_ms": _NUMBER, "tokens_per_second": _NUMBER,
    "created_at": _TEXT, "batch_id": _TEXT,
}
_CONVERSATION_TYPES: dict[str, tuple[type, ...]] = {
    "title": _TEXT, "model": _TEXT, "system_prompt": _TEXT, "params": (dict,),
    "created_at": _TEXT, "updated_at": _TEXT, "pinned": (bool,), "archived": (bool,),
    "active_leaf_id": (int,),
}


def _unbundle(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and data.get("format") == EXPORT_BUNDLE_FORMAT:
        data = data.get("conversations")
        if not isinstance(data, list):
            raise StoreError("not a localr1 export: 'conversations' must be a list")
    exports = data if isinstance(data, list) else [data]
    if not exports:
        raise StoreError("nothing to import: the list of conversations is empty")
    return exports


def _check_export(data: Any, number: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validated (conversation, messages in insertion order) or a one-line StoreError."""
    where = f"conversation {number}: " if number is not None else ""

    def fail(message: str) -> StoreError:
        return StoreError(f"invalid import: {where}{message}")

    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise fail(f"not a localr1 export (expected \"format\": \"{EXPORT_FORMAT}\")")
    if data.get("version") != EXPORT_VERSION:
        raise fail(f"unsupported export version {data.get('version')!r} "
                   f"(this localr1 reads version {EXPORT_VERSION})")
    conversation = data.get("conversation")
    messages = data.get("messages")
    if not isinstance(conversation, dict):
        raise fail("'conversation' must be an object")
    if not isinstance(messages, list):
        raise fail("'messages' must be a list")
    now = _now()
    conv = {"title": None, "model": None, "system_prompt": None, "params": {},
            "created_at": now, "updated_at": now, "pinned": False, "archived": False,
            "active_leaf_id": None}
    for key, value in conversation.items():
        if key == "id" or key == "message_count":
            continue
        if key not in _CONVERSATION_TYPES:
            raise fail(f"unknown conversation field {key!r}")
        if value is not None and not _is_type(value, _CONVERSATION_TYPES[key]):
            raise fail(f"conversation field {key!r} has the wrong type")
        if value is None and key in ("params", "created_at", "updated_at", "pinned",
                                     "archived"):
            raise fail(f"conversation field {key!r} cannot be null")
        conv[key] = value

    by_id: dict[int, dict[str, Any]] = {}
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise fail(f"message {n} is not an object")
        old_id = message.get("id")
        if not _is_type(old_id, (int,)):
            raise fail(f"message {n} needs an integer 'id'")
        if old_id in by_id:
            raise fail(f"message id {old_id} appears twice")
        role = message.get("role")
        if role not in ROLES:
            raise fail(f"message {old_id}: role must be one of {', '.join(ROLES)}")
        parent = message.get("parent_id")
        if parent is not None and not _is_type(parent, (int,)):
            raise fail(f"message {old_id}: 'parent_id' must be an integer or null")
        clean: dict[str, Any] = {"id": old_id, "parent_id": parent, "role": role,
                                 "content": "", "created_at": now}
        for key, value in message.items():
            if key in ("id", "parent_id", "role", "conversation_id"):
                continue
            if key not in _MESSAGE_TYPES:
                raise fail(f"message {old_id}: unknown field {key!r}")
            if value is not None and not _is_type(value, _MESSAGE_TYPES[key]):
                raise fail(f"message {old_id}: {key!r} has the wrong type")
            if value is None and key in ("content", "created_at"):
                raise fail(f"message {old_id}: {key!r} cannot be null")
            clean[key] = value
        if clean.get("finish_reason") is not None and clean["finish_reason"] not in \
                FINISH_REASONS:
            raise fail(f"message {old_id}: unknown finish_reason {clean['finish_reason']!r}")
        by_id[old_id] = clean

    # Parents before children, otherwise in the original id order (new ids keep the order
    # that "newest leaf" and alternates rely on); dangling links and cycles are refused.
    children: dict[int, list[int]] = {}
    ready: list[int] = []
    for message in by_id.values():
        parent = message["parent_id"]
        if parent is None:
            ready.append(message["id"])
        elif parent not in by_id:
            raise fail(f"message {message['id']}: parent {parent} is not in the export")
        else:
            children.setdefault(parent, []).append(message["id"])
    heapq.heapify(ready)
    ordered: list[dict[str, Any]] = []
    while ready:
        old_id = heapq.heappop(ready)
        ordered.append(by_id[old_id])
        for child in children.get(old_id, ()):
            heapq.heappush(ready, child)
    if len(ordered) != len(by_id):
        placed = {m["id"] for m in ordered}
        stuck = sorted(set(by_id) - placed)[:5]
        raise fail(f"messages {', '.join(map(str, stuck))} form a cycle")
    if conv["active_leaf_id"] is not None and conv["active_leaf_id"] not in by_id:
        raise fail(f"active_leaf_id {conv['active_leaf_id']} is not one of its messages")
    return conv, ordered


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python, but true is not a token count.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _insert_export(db: Database, conv: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    conversation_id = db.execute(
        "INSERT INTO conversations (title, model, system_prompt, params, created_at, "
        "updated_at, pinned, archived) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (conv["title"], conv["model"], conv["system_prompt"], json.dumps(conv["params"]),
         conv["created_at"], conv["updated_at"], int(conv["pinned"]),
         int(conv["archived"]))).lastrowid
    new_ids: dict[int, int] = {}
    for message in messages:
        columns = {k: v for k, v in message.items() if k != "id"}
        columns["conversation_id"] = conversation_id
        if columns["parent_id"] is not None:
            columns["parent_id"] = new_ids[columns["parent_id"]]
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        new_ids[message["id"]] = db.execute(
            f"INSERT INTO messages ({names}) VALUES ({marks})",
            tuple(columns.values())).lastrowid
    if conv["active_leaf_id"] is not None:
        db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?",
                   (new_ids[conv["active_leaf_id"]], conversation_id))
    return conversation_id

