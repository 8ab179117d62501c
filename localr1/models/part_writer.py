"""Hashing what is downloaded: the digests a file is verified against (the LFS sha256, or the
git blob id of a file kept in git itself), and a `.part` file appended to while a second thread
hashes it, so a download is verified without reading it again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from localr1.models.pull_events import BytesDone, OnEvent

if TYPE_CHECKING:
    from localr1.models.hub_resolve import RemoteFile

WRITEBACK_EVERY = 64 << 20


def file_sha256(path: Path) -> str:
    """A whole file's sha256, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def hexdigests(digests: list) -> tuple[str, str | None]:
    """(sha256, git sha1 or None) from the digests a download keeps."""
    return digests[0].hexdigest(), digests[1].hexdigest() if len(digests) > 1 else None


def matches(remote: RemoteFile, digests: tuple[str, str | None]) -> bool:
    """Whether (sha256, git sha1) are what the Hub says the file hashes to."""
    sha256, git_sha1 = digests
    return sha256 == remote.sha256 if remote.sha256 else git_sha1 == remote.git_oid


def new_digests(remote: RemoteFile) -> list:
    """The digests a download of `remote` is verified with."""
    digests = [hashlib.sha256()]
    if not remote.sha256:  # a file in git itself: its blob id is sha1("blob <size>\0" + bytes)
        digests.append(hashlib.sha1(f"blob {remote.size}\0".encode(), usedforsecurity=False))
    return digests


def hash_file(path: Path, remote: RemoteFile, on_event: OnEvent,
              cancel: threading.Event | None) -> tuple[str, str | None]:
    """(sha256, git sha1 or None) of a file on disk; a cancel stops it (KeyboardInterrupt)."""
    digests = new_digests(remote)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            for digest in digests:
                digest.update(block)
            on_event(BytesDone(len(block)))
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
    return hexdigests(digests)


class PartWriter:
    """Appends to a `.part` file while a second thread hashes: first the bytes already on disk
    (a resumed download), then every chunk as it is written. hashlib releases the GIL, so the
    hash costs no download throughput on a machine with two cores."""

    _DONE = object()

    def __init__(self, part: Path, keep: int, digests: list) -> None:
        self.part = part
        self.size = keep
        self._digests = digests
        self._queue: queue.Queue[bytes | object] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        part.parent.mkdir(parents=True, exist_ok=True)
        if keep and part.is_file():
            self._file = open(part, "r+b")  # noqa: SIM115 - closed in close()
            self._file.truncate(keep)
            self._file.seek(keep)
        else:
            self.size = 0
            self._file = open(part, "wb")  # noqa: SIM115
        self._flushed = self.size
        self._thread = threading.Thread(target=self._hash, args=(self.size,), daemon=True,
                                        name="localr1-hash")
        self._thread.start()

    def _hash(self, prefix: int) -> None:
        try:
            with open(self.part, "rb") as existing:
                left = prefix
                while left and not self._stop.is_set():
                    block = existing.read(min(8 << 20, left))
                    if not block:
                        raise OSError(f"{self.part} shrank while being hashed")
                    self._update(block)
                    left -= len(block)
            while not self._stop.is_set():
                try:
                    chunk = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if chunk is self._DONE:
                    return
                self._update(chunk)
        except BaseException as exc:  # reported by finish()
            self._error = exc

    def _update(self, block: bytes) -> None:
        for digest in self._digests:
            digest.update(block)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)
        if self.size - self._flushed >= WRITEBACK_EVERY:
            self._start_writeback()
        if not self._put(chunk):
            raise OSError(f"hashing {self.part} failed: {self._error}")

    def _put(self, item: bytes | object) -> bool:
        """Queue `item` for the hash thread; False when that thread has died (a full queue
        would otherwise block forever)."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                if not self._thread.is_alive():
                    return False

    def _start_writeback(self) -> None:
        """Have the kernel start writing what we have so far (without waiting for it), so the
        fsync before the file is moved into place has little left to do; the pages are
        dropped from the cache once written, so a 20 GB download does not evict everything."""
        self._file.flush()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._file.fileno(), 0, self.size, os.POSIX_FADV_DONTNEED)
        self._flushed = self.size

    def finish(self) -> tuple[str, str | None]:
        """Flush to disk, wait for the hash to catch up, return (sha256, git sha1 or None)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._put(self._DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return hexdigests(self._digests)

    def close(self) -> None:
        """Stop hashing and close the file; the bytes written so far stay on disk."""
        self._stop.set()
        if not self._file.closed:
            with contextlib.suppress(OSError):  # e.g. ENOSPC again: the first error is reported
                self._file.close()
        self._thread.join(timeout=5)

