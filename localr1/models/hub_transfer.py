"""One file over HTTP into its `.part`, on huggingface_hub's shared HTTP client (the user's
token, `HF_ENDPOINT`), because `hf_hub_download` starts an interrupted file from zero in a new
process. Ours:

* appends to `<file>.part` with `Range: bytes=N-`, so a new process continues where the last one
  stopped (after Ctrl+C, a crash or `kill -9`); a server that answers 200 instead of 206 gets the
  file started over cleanly;
* retries a dropped or stalled connection with exponential backoff (the count resets once real
  progress is made); stalled is less than 16 KB in `read_timeout` seconds, so a server that
  trickles a byte now and then cannot hold a pull forever;
* gives up after one quick, silent retry when the host was never reached (name not resolved,
  connection refused): one line naming it, in a second, not half a minute of backoff;
* hashes on a second thread while downloading (the bytes already in the `.part` first), and
  checks the Hub's sha256 before the file is moved into place; a mismatch deletes it;
* refuses a body whose size is not the Hub's, and starts a file over at most once, so a
  server that disagrees about the size cannot keep a pull going forever;
* runs under an exclusive lock on the `.part` (only_pull_of, taken by hub_download), so two
  pulls never append to one file.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localr1.errors import LocalR1Error
from localr1.models.download_errors import (
    ChecksumMismatchError,
    DownloadError,
    PullInterrupted,
    raise_if_no_space,
)
from localr1.models.hub_resolve import (
    RemoteFile,
    hub_error,
    hub_session,
    is_connect_failure,
    one_line,
    unreachable,
)
from localr1.models.part_writer import PartWriter, hash_file, matches, new_digests
from localr1.models.pull_events import BytesDone, FileDone, Notice, OnEvent, ignore_event
from localr1.sizes import format_bytes

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
STALL_MIN_BYTES = 16 << 10  # in each read-timeout window; slower is no use for a GGUF


@dataclass(frozen=True)
class DownloadOptions:
    chunk_size: int = 1 << 20
    max_retries: int = 5  # consecutive failures without real progress (STALL_MIN_BYTES)
    retry_base_delay: float = 1.0  # seconds; doubles per retry
    retry_max_delay: float = 30.0
    # Before the one retry of a host never reached: a blip, not an outage, is worth that much.
    connect_retry_delay: float = 0.5
    # Seconds in which under STALL_MIN_BYTES arrive (or none) before the connection counts as
    # stalled and is retried; None: huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT.
    read_timeout: float | None = None
    use_hf_cache: bool = True


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    size: int
    sha256: str
    how: str  # "downloaded", "already downloaded", "linked from the Hugging Face cache", ...


class _Retry(Exception):
    """A transient failure worth another request (a server error status, an early close)."""


class _StartOver(Exception):
    """The server's idea of the file differs from ours (416, an odd Content-Range)."""


class _Stalled(_Retry):
    """Too few bytes for too long: a dead connection, or a trickle meant to hold us forever."""


class _StallWatch:
    """Less than STALL_MIN_BYTES in any `seconds` is a stall. The read timeout alone catches a
    silent connection, not one that sends a byte every few seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since = time.monotonic()
        self._bytes = 0

    def saw(self, n_bytes: int) -> None:
        self._bytes += n_bytes
        now = time.monotonic()
        if now - self._since >= self.seconds:
            if self._bytes < STALL_MIN_BYTES:
                raise _Stalled
            self._since, self._bytes = now, 0


class Transfer:
    """Downloading one file into its `.part`, with resume, retries and verification."""

    def __init__(self, remote: RemoteFile, dest: Path, part: Path, started, on_event: OnEvent,
                 options: DownloadOptions, cancel: threading.Event | None) -> None:
        self.remote, self.dest, self.part = remote, dest, part
        self.started, self.on_event, self.options, self.cancel = \
            started, on_event, options, cancel
        self.writer: PartWriter | None = None
        self.reached = False  # a response came: connect failures from now on are drops
        self.started_over = False  # a second disagreement about the size is not retried

    @property
    def on_disk(self) -> int:
        if self.writer is not None:
            return self.writer.size
        return self.part.stat().st_size if self.part.is_file() else 0

    def run(self) -> DownloadedFile:
        """The download; the caller holds only_pull_of(part)."""
        size = self.remote.size
        if self.on_disk > size:
            self.on_event(Notice(f"{self.part.name} is larger than the file on the Hub; "
                                 "starting over"))
            os.truncate(self.part, 0)  # not unlink: our lock is on this very file
        have = self.on_disk
        self.started("resume" if have else "download", have)
        if size == 0:
            self.part.touch()
        try:
            self._fetch()
            digests = self.writer.finish() if self.writer else \
                hash_file(self.part, self.remote, ignore_event, self.cancel)
        except KeyboardInterrupt:
            raise PullInterrupted(self.part, self.on_disk, size) from None
        except OSError as exc:
            raise_if_no_space(exc, self.part, kept=True)
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
        if not matches(self.remote, digests):
            self.part.unlink(missing_ok=True)
            expected = self.remote.sha256 or self.remote.git_oid
            got = digests[0] if self.remote.sha256 else digests[1]
            raise ChecksumMismatchError(
                f"{self.remote.filename}: checksum mismatch (expected {expected[:16]}…, got "
                f"{got[:16]}…); the download was deleted, pull again to fetch it anew")
        os.replace(self.part, self.dest)
        self.on_event(FileDone(self.remote.filename, "downloaded"))
        return DownloadedFile(self.dest, size, digests[0], "downloaded")

    def _fetch(self) -> None:
        failures = connect_failures = 0
        while self.on_disk < self.remote.size:
            if self.cancel is not None and self.cancel.is_set():
                raise KeyboardInterrupt
            before = self.on_disk
            try:
                self._request(before)
                if self.on_disk < self.remote.size:
                    raise _Retry("the server closed the connection early")
            except _StartOver:
                if self.started_over:
                    raise DownloadError(
                        f"{self.remote.filename}: the server keeps disagreeing about the "
                        f"file's size ({format_bytes(self.remote.size)} on the Hub); giving "
                        "up") from None
                self.started_over = True
                self.on_event(Notice("the server disagrees about the file's size; "
                                     "starting this file over"))
                self._start_over()
                continue
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if is_connect_failure(exc) and not self.reached:
                    connect_failures += 1
                    if connect_failures > 1:
                        raise self._unreachable(exc) from None
                    self._wait(self.options.connect_retry_delay)
                    continue
                progressed = self.on_disk - before >= STALL_MIN_BYTES
                failures = 1 if progressed else failures + 1
                if failures > self.options.max_retries:
                    raise DownloadError(
                        f"{self.remote.filename}: download failed after "
                        f"{self.options.max_retries} retries ({self._problem(exc)}); kept "
                        f"{format_bytes(self.on_disk)} in {self.part.name}, pull again to "
                        "resume") from None
                delay = min(self.options.retry_max_delay,
                            self.options.retry_base_delay * 2 ** (failures - 1))
                self.on_event(Notice(f"connection problem ({self._problem(exc)}); retrying in "
                                     f"{delay:g}s ({failures}/{self.options.max_retries})"))
                self._wait(delay)

    def _wait(self, seconds: float) -> None:
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            raise KeyboardInterrupt

    def _unreachable(self, exc: BaseException) -> LocalR1Error:
        error = unreachable(exc)
        if not self.on_disk:
            return error
        return DownloadError(f"{error}; kept {format_bytes(self.on_disk)} in {self.part.name}, "
                             "pull again to resume")

    def _read_timeout(self) -> float:
        from huggingface_hub import constants

        return self.options.read_timeout or constants.HF_HUB_DOWNLOAD_TIMEOUT

    def _problem(self, exc: BaseException) -> str:
        import httpx2

        if isinstance(exc, _Stalled | httpx2.ReadTimeout):
            return f"connection stalled: no progress for {self._read_timeout():g} s"
        return one_line(exc)

    def _request(self, start: int) -> None:
        import httpx2
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        headers = build_hf_headers()  # the user's token, found the way huggingface_hub does
        headers["Accept-Encoding"] = "identity"
        if start:
            headers["Range"] = f"bytes={start}-"
        read_timeout = self._read_timeout()
        timeout = httpx2.Timeout(read_timeout, connect=min(read_timeout, 30))
        try:
            with hub_session().stream("GET", self.remote.url, headers=headers,
                                      timeout=timeout) as response:
                self.reached = True
                status = response.status_code
                if status in _RETRY_STATUSES:
                    raise _Retry(f"HTTP {status}")
                if status == 416:  # our idea of the size and the server's differ
                    raise _StartOver
                try:
                    hf_raise_for_status(response)
                except Exception as exc:
                    raise hub_error(exc, self.remote.repo, self.remote.path,
                                    self.remote.revision) from None
                self._check_size(response)
                if start and status == 200:  # Range ignored: this body is the whole file
                    self.on_event(Notice("the server ignored the resume request (Range); "
                                         "starting this file over"))
                    self._start_over()
                elif start and _range_start(response.headers.get("Content-Range")) != start:
                    raise _StartOver
                elif self.writer is None:
                    self._open_writer(start)
                self._receive(response)
        except Exception as exc:
            if isinstance(exc, LocalR1Error | _Retry | _StartOver) or _is_transient(exc):
                raise
            raise hub_error(exc, self.remote.repo, self.remote.path,
                            self.remote.revision) from None

    def _check_size(self, response) -> None:
        """Refuse a body whose total size is not the Hub's: resuming it could never end."""
        if response.status_code == 206:
            total = _range_total(response.headers.get("Content-Range"))
        else:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        if total is not None and total != self.remote.size:
            raise DownloadError(
                f"{self.remote.filename}: the server's file has {total:,} bytes but the Hub "
                f"says {self.remote.size:,}; not downloading it")

    def _receive(self, response) -> None:
        """Write the body in `chunk_size` pieces, watching every network read for a stall;
        what arrived before a failure is written too, so a retry asks for less."""
        watch = _StallWatch(self._read_timeout())
        pending: list[bytes] = []
        size = 0
        try:
            for piece in response.iter_bytes():
                if self.cancel is not None and self.cancel.is_set():
                    raise KeyboardInterrupt
                watch.saw(len(piece))
                pending.append(piece)
                size += len(piece)
                if size >= self.options.chunk_size:
                    # Cleared before writing: a Ctrl+C inside _write must not have the
                    # finally block append the same bytes a second time.
                    data, pending, size = b"".join(pending), [], 0
                    self._write(data)
        finally:
            if pending:
                data, pending = b"".join(pending), []
                self._write(data)

    def _write(self, chunk: bytes) -> None:
        self.writer.write(chunk)
        self.on_event(BytesDone(len(chunk)))
        if self.writer.size > self.remote.size:
            raise DownloadError(f"{self.remote.filename}: the server sent more "
                                "bytes than the Hub says the file has")

    def _start_over(self) -> None:
        self._open_writer(0)
        self.started("download", 0)

    def _open_writer(self, keep: int) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = PartWriter(self.part, keep, new_digests(self.remote))


@contextlib.contextmanager
def only_pull_of(part: Path, filename: str) -> Iterator[None]:
    """Hold an exclusive lock on the `.part` file: two pulls appending to it would corrupt it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; a second pull fails on the sha256 check instead
        yield
        return
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"another localr1 pull is already downloading {filename}; "
                                "wait for it to finish") from None
        yield


def _is_transient(exc: BaseException) -> bool:
    import httpx2

    return isinstance(exc, _Retry | httpx2.TransportError)


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match[1]) if match else None


def _range_total(content_range: str | None) -> int | None:
    match = re.fullmatch(r"bytes \d+-\d+/(\d+)", (content_range or "").strip())
    return int(match[1]) if match else None
