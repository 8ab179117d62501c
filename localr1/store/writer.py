"""Crash-safe streaming writes: an answer is on disk from its first token."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from localr1.store.connection import SqliteFailure
from localr1.store.errors import StoreError
from localr1.store.records import FINISH_REASONS, Message, utc_now

if TYPE_CHECKING:
    from sqlite_utils import Database

    from localr1.store.database import Store

# Seconds the exit path waits for the writer, then for SQLite's lock: the line comes first.
EXIT_WAIT = 0.5


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

    def flush_before_exit(self, timeout: float = EXIT_WAIT) -> None:
        """`flush` from the thread that ends the process (a lost RPC worker), once: it waits at
        most `timeout` for this writer and as long for SQLite's lock, with no retry, so the
        exit line is not held back by an owner stuck holding the writer or by another
        program's write; what it could not write is lost, as with a kill."""
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            if self.message_id is not None and self._dirty:
                content, reasoning = self._texts()
                _write_once(self._store._db().conn, timeout,
                            "UPDATE messages SET content = ?, reasoning = ? WHERE id = ?",
                            (content, reasoning, self.message_id))
                self._dirty = False
        finally:
            self._lock.release()

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
                               (utc_now(), self._conversation_id))

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


def _write_once(conn: sqlite3.Connection, busy_timeout: float, sql: str, params: tuple) -> None:
    """One `BEGIN IMMEDIATE` transaction of `sql` that waits at most `busy_timeout` seconds for
    the file's lock (this thread's connection keeps its own timeout afterwards)."""
    try:
        previous = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
    except sqlite3.Error as exc:
        raise SqliteFailure(exc) from None
