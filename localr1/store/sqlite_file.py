"""The history database as a file: open (private, read-only when only reading), migrate,
one connection per thread, and short transactions retried while another process holds the
lock. `Store` (database.py) builds conversations and messages on top.

Crash safety: every write is its own short `BEGIN IMMEDIATE` transaction in a WAL database.
Threads: one sqlite connection per thread (threading.local), each in its own sqlite-utils
`Database`, so the CLI, the TUI's workers and a batch runner can share one `Store`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

# isort: off
from localr1.store import pandas_free  # noqa: F401  (before sqlite_utils)
from sqlite_utils import Database
# isort: on

from localr1.store.connection import (
    SqliteFailure,
    connect,
    create_private_file,
    guarded,
    open_reason,
    retry_locked,
)
from localr1.store.errors import StoreError
from localr1.store.schema import MIGRATIONS, known_migrations

T = TypeVar("T")


class SqliteFile:
    """Thread-safe access to one migrated SQLite file: a connection per thread, short
    transactions retried while the file is locked. `Store` adds what the file holds."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, Database]] = []
        self._closed = False
        self._pid = os.getpid()

    @classmethod
    def open(cls, path: Path | None = None, *, read_only: bool = False) -> Self:
        """Open (creating if needed) and migrate the database; default `app_paths().db_path`.

        `read_only` (for commands that only read) writes nothing, so a read-only data folder
        still works; it neither creates nor upgrades the file (a missing or empty one is
        opened for writing instead, to be created).
        """
        if path is None:
            from localr1.paths import app_paths

            path = app_paths().db_path
        path = Path(path).expanduser()
        if path.is_dir():
            raise StoreError(f"cannot open the history database {path}: it is a folder")
        if read_only and path.is_file() and path.stat().st_size > 0:
            return cls._open_read_only(path)
        store = cls(path)
        try:
            created = create_private_file(path)
            db = store._db()
            store._read(store._check_not_newer)  # before WAL: not on someone else's file
            retry_locked(lambda: db.execute("PRAGMA journal_mode = WAL").fetchall())
            store._write(store._migrate)
            if created:
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(f"{path}{suffix}", 0o600)
        except (sqlite3.Error, OSError, StoreError) as exc:
            store.close()
            raise _open_failure(path, exc) from None
        return store

    @classmethod
    def _open_read_only(cls, path: Path) -> Self:
        store = cls(path, read_only=True)
        try:
            applied = store._read(store._check_not_newer)
        except (sqlite3.Error, OSError, StoreError) as exc:
            store.close()
            raise _open_failure(path, exc) from None
        if not applied:  # an empty file: create the tables (a write, but the only way)
            store.close()
            return cls.open(path)
        return store

    def _check_not_newer(self, db: Database) -> list[str]:
        """The migrations applied to `db`; StoreError if this code does not know one."""
        applied = [m.name for m in MIGRATIONS.applied(db)]
        if not applied and db.execute(
                "SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND name != ?", (MIGRATIONS.migrations_table,)).fetchone():
            raise StoreError("not a localr1 history database (it holds another program's "
                             "tables)")
        known = set(known_migrations())
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise StoreError(f"it was written by a newer localr1 (migration {unknown[-1]}); "
                             "upgrade localr1")
        return applied

    def _migrate(self, db: Database) -> None:
        # Runs inside _write's BEGIN IMMEDIATE, so two processes opening a new file at once
        # migrate it one after the other. (A future migration with transactional=False,
        # e.g. one that VACUUMs, would have to run after this transaction.)
        self._check_not_newer(db)
        MIGRATIONS.apply(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _thread, db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def __enter__(self) -> Self:
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
        db = Database(connect(self.path, read_only=self.read_only))
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

        return guarded(attempt)

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

        return guarded(attempt)

    def _rows(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        db = self._db()

        def read() -> list[dict[str, Any]]:
            cursor = db.execute(sql, params)
            keys = [d[0] for d in cursor.description]
            return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

        return guarded(read)


def _open_failure(path: Path, exc: BaseException) -> StoreError:
    reason = exc.reason if isinstance(exc, SqliteFailure) else open_reason(exc)
    if not os.access(path.parent, os.W_OK):
        reason += " (its folder is read-only)"
    return StoreError(f"cannot open the history database {path}: {reason}")
