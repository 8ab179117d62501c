"""Resolving models on the Hugging Face Hub, and the resumable, hashed, verified download.

Resolution goes through huggingface_hub itself (`HfApi.get_paths_info` for sizes and LFS sha256,
`list_repo_tree` to find a quant, `hf_hub_url`, the user's token, `HF_ENDPOINT`, offline mode).
The transfer is our own, on huggingface_hub's shared HTTP client, because `hf_hub_download`
starts an interrupted file from zero in a new process. Ours:

* appends to `<file>.part` with `Range: bytes=N-`, so a new process continues where the last one
  stopped (after Ctrl+C, a crash or `kill -9`); a server that answers 200 instead of 206 gets the
  file started over cleanly;
* retries a dropped connection with exponential backoff (the count resets whenever bytes arrive);
* hashes on a second thread while downloading (the bytes already in the `.part` first), and
  checks the Hub's sha256 before the file is moved into place; a mismatch deletes it;
* reuses a blob with the same sha256 from the user's Hugging Face cache (hard link, else copy).

Progress is reported as typed events (`PullEvent`) to a callback; nothing here prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localr1.errors import LocalR1Error
from localr1.models.hardware import free_disk_bytes
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    from localr1.models.catalog import Catalog, CatalogEntry

DEFAULT_QUANT = "Q4_K_M"  # what `owner/repo` without a quant pulls, like Ollama's hf.co/ names
PART_SUFFIX = ".part"
SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_IN_NAME = re.compile(
    r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|MXFP4(?:_MOE)?|TQ\d_\d)$", re.IGNORECASE)
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_WRITEBACK_EVERY = 64 << 20


# ---- errors ------------------------------------------------------------------------------------


class HubError(LocalR1Error):
    """The Hub said no (unknown repo, revision or file, gated, offline) or cannot be reached."""


class DownloadError(LocalR1Error):
    """A transfer that failed after its retries; the `.part` file is kept for the next pull."""


class ChecksumMismatchError(DownloadError):
    """The bytes on disk do not hash to the Hub's sha256; the file has been deleted."""


class NotEnoughSpaceError(LocalR1Error):
    """The disk cannot hold the download (checked before it starts, and on ENOSPC)."""


class PullInterrupted(LocalR1Error):
    """Ctrl+C or a cancel request: the `.part` file stays, and the next pull resumes it."""

    def __init__(self, part_path: Path | None, done_bytes: int, total_bytes: int) -> None:
        self.part_path, self.done_bytes, self.total_bytes = part_path, done_bytes, total_bytes
        if part_path is None:
            super().__init__("interrupted; pull again to continue")
        else:
            super().__init__(f"interrupted: kept {part_path.name} ({format_bytes(done_bytes)} "
                             f"of {format_bytes(total_bytes)}); pull again to resume")


# ---- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    revision: str
    path: str  # in the repo, "/"-separated
    size: int
    sha256: str | None  # the LFS oid; None for a file kept in git itself
    git_oid: str  # the git blob id: what a non-LFS file is verified against
    url: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PullPlan:
    """What `pull REFERENCE` will fetch: resolved on the Hub, nothing downloaded yet."""

    name: str  # the name it is installed under: "r1:7b-q4_k_m" or "owner/repo:Q4_K_M"
    reference: str  # what the user typed
    repo: str
    revision: str
    quant: str | None
    files: tuple[RemoteFile, ...]  # every part of a split GGUF, in order
    catalog_entry: CatalogEntry | None

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def local_paths(self, models_dir: Path) -> tuple[Path, ...]:
        return tuple(local_path(models_dir, f.repo, f.path) for f in self.files)


@dataclass(frozen=True)
class DownloadOptions:
    chunk_size: int = 1 << 20
    max_retries: int = 5  # consecutive failures without a byte received
    retry_base_delay: float = 1.0  # seconds; doubles per retry
    retry_max_delay: float = 30.0
    read_timeout: float | None = None  # None: huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT
    use_hf_cache: bool = True


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    size: int
    sha256: str
    how: str  # "downloaded", "already downloaded", "linked from the Hugging Face cache", ...


@dataclass(frozen=True)
class FileStarted:
    filename: str
    index: int  # 1-based, of `count` files in this pull
    count: int
    total_bytes: int
    done_bytes: int  # already on disk (resume) when the action starts
    action: Literal["download", "resume", "verify", "copy"]


@dataclass(frozen=True)
class BytesDone:
    n_bytes: int


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class FileDone:
    filename: str
    how: str


PullEvent = FileStarted | BytesDone | Notice | FileDone
OnEvent = Callable[[PullEvent], None]


def _ignore(_event: PullEvent) -> None:
    pass


# ---- names and references -----------------------------------------------------------------------


def local_path(models_dir: Path, repo: str, path_in_repo: str) -> Path:
    """Where a Hub file lives once pulled: models_dir/<owner>/<repo>/<path in repo>."""
    return models_dir.joinpath(*repo.split("/"), *path_in_repo.split("/"))


def quant_from_filename(filename: str) -> str | None:
    """'X-Q4_K_M.gguf' -> 'Q4_K_M'; split parts ('-00001-of-00002') are handled too."""
    stem = SPLIT_PART.sub(".gguf", filename.rsplit("/", 1)[-1])
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    match = _QUANT_IN_NAME.search(stem)
    return match[1].upper() if match else None


def split_part_paths(path: str) -> tuple[str, ...]:
    """All parts of a split GGUF named by any one of them; (path,) when it is not split."""
    match = SPLIT_PART.search(path)
    if not match:
        return (path,)
    count = int(match[2])
    base = path[: match.start()]
    return tuple(f"{base}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1))


@dataclass(frozen=True)
class HubReference:
    repo: str
    quant: str | None  # "owner/repo:QUANT" (or neither: the default quant)
    file: str | None  # "owner/repo/path/file.gguf"


def parse_hub_reference(text: str) -> HubReference | None:
    """`owner/repo:QUANT`, `owner/repo/FILE.gguf` or `owner/repo` (hf.co/ prefix allowed)."""
    text = re.sub(r"^(?:https?://)?(?:hf\.co|huggingface\.co)/", "", text.strip())
    if text.lower().endswith(".gguf"):
        parts = text.split("/")
        if len(parts) < 3 or not all(parts):
            return None
        return HubReference("/".join(parts[:2]), None, "/".join(parts[2:]))
    repo, _, quant = text.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")) or (_ and not quant):
        return None
    return HubReference(repo, quant.upper() or None, None)


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# ---- resolution ---------------------------------------------------------------------------


def resolve_pull(reference: str, catalog: Catalog) -> PullPlan:
    """Turn a catalog name, `owner/repo:QUANT` or `owner/repo/FILE.gguf` into files on the Hub."""
    entry = catalog.find(reference)
    if entry is not None:
        return _plan(entry.name, reference, entry.repo, entry.model.revision,
                     entry.quant.quant, entry.files, entry)
    hub_ref = parse_hub_reference(reference)
    if hub_ref is None:
        from localr1.models.catalog import UnknownModelError, nearest_hint

        raise UnknownModelError(
            f"unknown model '{reference}'{nearest_hint(reference, catalog.names())} "
            "(pull takes a catalog name, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf)")
    if hub_ref.file is not None:
        paths = split_part_paths(hub_ref.file)
        quant = quant_from_filename(hub_ref.file)
        name = f"{hub_ref.repo}:{quant}" if quant else f"{hub_ref.repo}/{paths[0]}"
        return _plan(name, reference, hub_ref.repo, "main", quant, paths, None)
    quant, paths = _find_quant(hub_ref.repo, hub_ref.quant)
    return _plan(f"{hub_ref.repo}:{quant}", reference, hub_ref.repo, "main", quant, paths, None)


def _plan(name: str, reference: str, repo: str, revision: str, quant: str | None,
          paths: tuple[str, ...], entry: CatalogEntry | None) -> PullPlan:
    return PullPlan(name, reference, repo, revision, quant,
                    remote_files(repo, paths, revision), entry)


def remote_files(repo: str, paths: tuple[str, ...], revision: str = "main") \
        -> tuple[RemoteFile, ...]:
    """Size, sha256 and URL of each path, in one paths-info call."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.hf_api import RepoFile

    endpoint = hub_endpoint()
    try:
        infos = HfApi(endpoint=endpoint).get_paths_info(repo, list(paths), revision=revision)
    except Exception as exc:
        raise hub_error(exc, repo, revision=revision) from None
    by_path = {info.path: info for info in infos if isinstance(info, RepoFile)}
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise HubError(f"{repo} has no file '{missing[0]}' (revision {revision})")
    return tuple(
        RemoteFile(repo, revision, p, by_path[p].size,
                   by_path[p].lfs.sha256 if by_path[p].lfs else None, by_path[p].blob_id,
                   hf_hub_url(repo, p, revision=revision, endpoint=endpoint))
        for p in paths
    )


def _find_quant(repo: str, quant: str | None) -> tuple[str, tuple[str, ...]]:
    """The GGUF file(s) of one quant in a repo: `-Q4_K_M.gguf` or its split parts."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        tree = [e.path for e in HfApi(endpoint=hub_endpoint()).list_repo_tree(repo, recursive=True)
                if isinstance(e, RepoFile) and e.path.lower().endswith(".gguf")]
    except Exception as exc:
        raise hub_error(exc, repo) from None
    by_quant: dict[str, list[str]] = {}
    for path in tree:
        found = quant_from_filename(path)
        if found:
            by_quant.setdefault(found, []).append(path)
    wanted = quant or (DEFAULT_QUANT if DEFAULT_QUANT in by_quant else None)
    available = ", ".join(sorted(by_quant)) or "none"
    if wanted is None:
        raise HubError(f"{repo}: name a quant, as in {repo}:QUANT (available: {available})")
    if wanted not in by_quant:
        raise HubError(f"{repo} has no {wanted} GGUF (available: {available})")
    files = sorted(by_quant[wanted])
    firsts = [p for p in files if not SPLIT_PART.search(p) or
              SPLIT_PART.search(p)[1] == "00001"]
    if len(firsts) > 1:
        raise HubError(f"{repo} has several {wanted} files ({', '.join(firsts)}); "
                       f"pull one as {repo}/FILE.gguf")
    return wanted, split_part_paths(firsts[0])


def hub_error(exc: BaseException, repo: str, path: str | None = None,
              revision: str = "main") -> LocalR1Error:
    """huggingface_hub's and httpx's exceptions as one-line messages."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, LocalR1Error):
        return exc
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so nothing can be pulled; unset it to download")
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{repo} is gated: accept its terms on the Hub, then log in "
                        "(`hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"repository '{repo}' not found on {hub_endpoint()} (if it is private, "
                        "log in with `hf auth login` or set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{repo} has no revision '{revision}'")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return HubError(f"{repo} has no file '{path}' (revision {revision})" if path
                        else f"{repo}: file not found (revision {revision})")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return HubError(f"the Hub answered HTTP {status} for {repo}"
                        f"{'/' + path if path else ''}")
    if isinstance(exc, errors.HFValidationError):
        return HubError(f"'{repo}' is not a valid Hub repository name")
    if isinstance(exc, httpx2.TransportError):
        return HubError(f"cannot reach {hub_endpoint()}: {_one_line(exc)}")
    raise exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- the Hugging Face cache ---------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The hub cache as huggingface_hub would use it now (HF_HUB_CACHE, HF_HOME, default)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def find_in_hf_cache(sha256: str, size: int, repo: str | None = None) -> Path | None:
    """A cached blob with this sha256 (LFS blobs are named by it), the same repo's first."""
    cache = hf_cache_dir()
    if not cache.is_dir():
        return None
    folders = sorted(cache.glob("models--*"))
    if repo:
        own = cache / ("models--" + repo.replace("/", "--"))
        folders = [own] + [f for f in folders if f != own]
    for folder in folders:
        blob = folder / "blobs" / sha256
        try:
            if blob.is_file() and blob.stat().st_size == size:
                return blob
        except OSError:
            continue
    return None


# ---- downloading -------------------------------------------------------------------------------


def download(plan: PullPlan, models_dir: Path, on_event: OnEvent = _ignore,
             options: DownloadOptions = DownloadOptions(),
             cancel: threading.Event | None = None) -> tuple[DownloadedFile, ...]:
    """Fetch every file of the plan into models_dir, verified; resumes `.part` files."""
    destinations = plan.local_paths(models_dir)
    _check_space(plan, destinations, options)
    results = []
    for index, (remote, dest) in enumerate(zip(plan.files, destinations, strict=True), start=1):
        results.append(download_file(remote, dest, on_event=on_event, options=options,
                                     cancel=cancel, index=index, count=len(plan.files)))
    return tuple(results)


def _check_space(plan: PullPlan, destinations: tuple[Path, ...],
                 options: DownloadOptions) -> None:
    needed = 0
    for remote, dest in zip(plan.files, destinations, strict=True):
        if dest.is_file() and dest.stat().st_size == remote.size:
            continue
        cached = find_in_hf_cache(remote.sha256, remote.size, remote.repo) \
            if options.use_hf_cache and remote.sha256 else None
        if cached is not None and _same_device(cached, dest):
            continue  # a hard link costs no space
        part = dest.with_name(dest.name + PART_SUFFIX)
        have = part.stat().st_size if part.is_file() else 0
        needed += remote.size - min(have, remote.size)
    if needed == 0:
        return
    margin = free_space_margin(plan.size_bytes)
    free = free_disk_bytes(destinations[0].parent)
    if free < needed + margin:
        raise NotEnoughSpaceError(
            f"no space left for {plan.name}: it needs {format_bytes(needed)} plus a "
            f"{format_bytes(margin)} margin, but {destinations[0].parent} has "
            f"{format_bytes(free)} free")


def free_space_margin(size: int) -> int:
    """Room to leave free besides the download: 5% of it, between 50 MB and 1 GB."""
    return min(1_000_000_000, max(50_000_000, size // 20))


def _same_device(existing: Path, dest: Path) -> bool:
    parent = dest.parent
    while not parent.exists():
        parent = parent.parent
    return existing.stat().st_dev == parent.stat().st_dev


def download_file(remote: RemoteFile, dest: Path, *, on_event: OnEvent = _ignore,
                  options: DownloadOptions = DownloadOptions(),
                  cancel: threading.Event | None = None, index: int = 1,
                  count: int = 1) -> DownloadedFile:
    """One verified file at `dest`: already there, from the HF cache, or downloaded."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    started = _starter(remote, on_event, index, count)
    if dest.is_file():
        if dest.stat().st_size == remote.size:
            started("verify", 0)
            digests = _interruptible(lambda: _hash_path(dest, remote, on_event, cancel), None,
                                     remote.size)
            if _matches(remote, digests):
                on_event(FileDone(remote.filename, "already downloaded"))
                return DownloadedFile(dest, remote.size, digests[0], "already downloaded")
        on_event(Notice(f"{remote.filename} on disk does not match the Hub's; fetching it again"))
        dest.unlink()
    if options.use_hf_cache and remote.sha256:
        cached = find_in_hf_cache(remote.sha256, remote.size, remote.repo)
        if cached is not None:
            result = _from_hf_cache(remote, cached, dest, started, on_event, cancel)
            if result is not None:
                part.unlink(missing_ok=True)
                return result
    return _Transfer(remote, dest, part, started, on_event, options, cancel).run()


def _starter(remote: RemoteFile, on_event: OnEvent, index: int, count: int):
    def started(action: str, done: int) -> None:
        on_event(FileStarted(remote.filename, index, count, remote.size, done, action))

    return started


def _interruptible(work, part: Path | None, total: int):
    """Run `work`; Ctrl+C (or a cancel) becomes PullInterrupted."""
    try:
        return work()
    except KeyboardInterrupt:
        raise PullInterrupted(part, part.stat().st_size if part and part.exists() else 0,
                              total) from None


def _matches(remote: RemoteFile, digests: tuple[str, str | None]) -> bool:
    sha256, git_sha1 = digests
    return sha256 == remote.sha256 if remote.sha256 else git_sha1 == remote.git_oid


def _new_digests(remote: RemoteFile) -> list:
    digests = [hashlib.sha256()]
    if not remote.sha256:  # a file in git itself: its blob id is sha1("blob <size>\0" + bytes)
        digests.append(hashlib.sha1(f"blob {remote.size}\0".encode(), usedforsecurity=False))
    return digests


def _hexdigests(digests: list) -> tuple[str, str | None]:
    return digests[0].hexdigest(), digests[1].hexdigest() if len(digests) > 1 else None


def _hash_path(path: Path, remote: RemoteFile, on_event: OnEvent,
               cancel: threading.Event | None) -> tuple[str, str | None]:
    digests = _new_digests(remote)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            for digest in digests:
                digest.update(block)
            on_event(BytesDone(len(block)))
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
    return _hexdigests(digests)


def _from_hf_cache(remote: RemoteFile, cached: Path, dest: Path, started, on_event: OnEvent,
                   cancel: threading.Event | None) -> DownloadedFile | None:
    """Hard-link (same disk) or copy a cached blob, verified; None if it does not verify."""
    tmp = dest.with_name(dest.name + ".linking")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(cached, tmp)
        except OSError:  # another disk, or no hard links here: copy, hashing as we go
            how = "copied from the Hugging Face cache"
            started("copy", 0)
            ok = _copy_hashed(cached, tmp, remote, on_event, cancel)
        else:
            how = "linked from the Hugging Face cache"
            started("verify", 0)
            ok = _matches(remote, _hash_path(tmp, remote, on_event, cancel))
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise PullInterrupted(None, 0, remote.size) from None
    if not ok:
        tmp.unlink(missing_ok=True)
        on_event(Notice(f"{cached} does not match its sha256; downloading instead"))
        return None
    os.replace(tmp, dest)
    on_event(FileDone(remote.filename, how))
    return DownloadedFile(dest, remote.size, remote.sha256 or "", how)


def _copy_hashed(source: Path, target: Path, remote: RemoteFile, on_event: OnEvent,
                 cancel: threading.Event | None) -> bool:
    digests = _new_digests(remote)
    try:
        with open(source, "rb") as src, open(target, "wb") as out:
            while block := src.read(8 << 20):
                out.write(block)
                for digest in digests:
                    digest.update(block)
                on_event(BytesDone(len(block)))
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
    except OSError as exc:
        target.unlink(missing_ok=True)
        _raise_if_no_space(exc, target)
        raise
    return _matches(remote, _hexdigests(digests))


def _raise_if_no_space(exc: OSError, path: Path, kept: bool = False) -> None:
    import errno

    if exc.errno == errno.ENOSPC:
        then = "pull again to resume (the partial file is kept)" if kept else "try again"
        raise NotEnoughSpaceError(f"no space left on the disk while writing {path}; free some "
                                  f"space, then {then}") from None


class _Retry(Exception):
    """A transient failure worth another request (a server error status, an early close)."""


class _StartOver(Exception):
    """The server's idea of the file differs from ours (416, an odd Content-Range)."""


class _Transfer:
    """Downloading one file into its `.part`, with resume, retries and verification."""

    def __init__(self, remote: RemoteFile, dest: Path, part: Path, started, on_event: OnEvent,
                 options: DownloadOptions, cancel: threading.Event | None) -> None:
        self.remote, self.dest, self.part = remote, dest, part
        self.started, self.on_event, self.options, self.cancel = \
            started, on_event, options, cancel
        self.writer: _PartWriter | None = None

    @property
    def on_disk(self) -> int:
        if self.writer is not None:
            return self.writer.size
        return self.part.stat().st_size if self.part.is_file() else 0

    def run(self) -> DownloadedFile:
        with _only_pull_of(self.part, self.remote.filename):
            return self._run()

    def _run(self) -> DownloadedFile:
        size = self.remote.size
        if self.on_disk > size:
            self.on_event(Notice(f"{self.part.name} is larger than the file on the Hub; "
                                 "starting over"))
            self.part.unlink()
        have = self.on_disk
        self.started("resume" if have else "download", have)
        if size == 0:
            self.part.touch()
        try:
            self._fetch()
            digests = self.writer.finish() if self.writer else \
                _hash_path(self.part, self.remote, _ignore, self.cancel)
        except KeyboardInterrupt:
            raise PullInterrupted(self.part, self.on_disk, size) from None
        except OSError as exc:
            _raise_if_no_space(exc, self.part, kept=True)
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
        if not _matches(self.remote, digests):
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
        failures = 0
        while self.on_disk < self.remote.size:
            if self.cancel is not None and self.cancel.is_set():
                raise KeyboardInterrupt
            before = self.on_disk
            try:
                self._request(before)
                if self.on_disk < self.remote.size:
                    raise _Retry("the server closed the connection early")
            except _StartOver:
                self.on_event(Notice("the server disagrees about the file's size; "
                                     "starting this file over"))
                self._start_over()
                continue
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                failures = 1 if self.on_disk > before else failures + 1
                if failures > self.options.max_retries:
                    raise DownloadError(
                        f"{self.remote.filename}: download failed after "
                        f"{self.options.max_retries} retries ({_one_line(exc)}); kept "
                        f"{format_bytes(self.on_disk)} in {self.part.name}, pull again to "
                        "resume") from None
                delay = min(self.options.retry_max_delay,
                            self.options.retry_base_delay * 2 ** (failures - 1))
                self.on_event(Notice(f"connection problem ({_one_line(exc)}); retrying in "
                                     f"{delay:g}s ({failures}/{self.options.max_retries})"))
                if self.cancel is not None:
                    if self.cancel.wait(delay):
                        raise KeyboardInterrupt from None
                else:
                    time.sleep(delay)

    def _request(self, start: int) -> None:
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        headers = build_hf_headers()  # the user's token, found the way huggingface_hub does
        headers["Accept-Encoding"] = "identity"
        if start:
            headers["Range"] = f"bytes={start}-"
        read_timeout = self.options.read_timeout or constants.HF_HUB_DOWNLOAD_TIMEOUT
        timeout = httpx2.Timeout(read_timeout, connect=min(read_timeout, 30))
        try:
            with get_session().stream("GET", self.remote.url, headers=headers,
                                      timeout=timeout) as response:
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
                if start and status == 200:  # Range ignored: this body is the whole file
                    self.on_event(Notice("the server ignored the resume request (Range); "
                                         "starting this file over"))
                    self._start_over()
                elif start and _range_start(response.headers.get("Content-Range")) != start:
                    raise _StartOver
                elif self.writer is None:
                    self._open_writer(start)
                for chunk in response.iter_bytes(self.options.chunk_size):
                    if self.cancel is not None and self.cancel.is_set():
                        raise KeyboardInterrupt
                    self.writer.write(chunk)
                    self.on_event(BytesDone(len(chunk)))
                    if self.writer.size > self.remote.size:
                        raise DownloadError(f"{self.remote.filename}: the server sent more "
                                            "bytes than the Hub says the file has")
        except Exception as exc:
            if isinstance(exc, LocalR1Error | _Retry | _StartOver) or _is_transient(exc):
                raise
            raise hub_error(exc, self.remote.repo, self.remote.path,
                            self.remote.revision) from None

    def _start_over(self) -> None:
        self._open_writer(0)
        self.started("download", 0)

    def _open_writer(self, keep: int) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = _PartWriter(self.part, keep, _new_digests(self.remote))


@contextlib.contextmanager
def _only_pull_of(part: Path, filename: str) -> Iterator[None]:
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


class _PartWriter:
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
        if self.size - self._flushed >= _WRITEBACK_EVERY:
            self._start_writeback()
        while True:
            try:
                self._queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise OSError(f"hashing {self.part} failed: {self._error}") from None

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
        self._queue.put(self._DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return _hexdigests(self._digests)

    def close(self) -> None:
        """Stop hashing and close the file; the bytes written so far stay on disk."""
        self._stop.set()
        if not self._file.closed:
            with contextlib.suppress(OSError):  # e.g. ENOSPC again: the first error is reported
                self._file.close()
        self._thread.join(timeout=5)


def remove_partial(path: Path) -> None:
    """Delete a file's leftover `.part` (used by `rm`)."""
    path.with_name(path.name + PART_SUFFIX).unlink(missing_ok=True)


def copy_file(source: Path, target: Path) -> None:
    """Copy a file (import --copy), cleaning up a half-written target on failure."""
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        target.unlink(missing_ok=True)
        _raise_if_no_space(exc, target)
        raise
