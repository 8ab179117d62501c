"""Opening the SQLite file (private, optionally read-only) and its failures as one line."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from localr1.store.errors import StoreError

BUSY_TIMEOUT_MS = 5000
# How long a writer keeps retrying "database is locked" after busy_timeout gave up.
LOCKED_RETRY_SECONDS = 20.0

T = TypeVar("T")


class SqliteFailure(StoreError):
    """A sqlite error (full disk, corrupt file, lock held too long) as one line."""

    def __init__(self, exc: BaseException) -> None:
        self.reason = open_reason(exc)
        super().__init__(f"history database error: {self.reason}")


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection with our pragmas. Read-only ones never write (no migration, no WAL
    files): they work in a read-only folder, where a clean WAL database needs `immutable`."""
    # check_same_thread=False only so Store.close() can close every thread's connection.
    timeout = BUSY_TIMEOUT_MS / 1000
    if not read_only:
        conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
    else:
        uri = f"file:{quote(str(path.absolute()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc):
                conn.close()
                raise
            # No -shm file and no right to create one: nobody can be writing, read as is.
            conn.close()
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, timeout=timeout,
                                   check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def retry_locked(fn: Callable[[], T]) -> T:
    """busy_timeout waits first; this is the last resort for a lock that outlives it."""
    deadline = time.monotonic() + LOCKED_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def guarded(fn: Callable[[], T]) -> T:
    """`fn` (retried while locked) with sqlite's errors as one-line StoreErrors."""
    try:
        return retry_locked(fn)
    except sqlite3.Error as exc:
        raise SqliteFailure(exc) from None
    except OverflowError:  # a Python int past SQLite's 64 bits (sqlite3 raises, not sqlite)
        raise StoreError("a number is too large for the history database (over 2^63)") from None
    except UnicodeEncodeError:  # text with lone surrogates (undecodable argv bytes, say)
        raise StoreError("text that is not valid UTF-8 cannot be saved in the history "
                         "database") from None


def is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "database is locked" in text or "database is busy" in text


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_reason(exc: BaseException) -> str:
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or one_line(exc)
    text = one_line(exc)
    if "file is not a database" in text:
        return "not a SQLite database (or it is encrypted or corrupt)"
    if "malformed" in text:
        return f"the file is corrupt ({text})"
    if isinstance(exc, sqlite3.OperationalError) and is_locked(exc):
        return "another program keeps it locked; try again"
    return text


def create_private_file(path: Path) -> bool:
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
