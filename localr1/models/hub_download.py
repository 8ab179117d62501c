"""Pulling a resolved plan (see hub_resolve) into the models folder, verified.

The disk space is checked first; each file is then taken as it is when already there and
matching the Hub's hash, hard-linked (else copied) from the user's Hugging Face cache when a blob
with the same sha256 is there, or transferred (hub_transfer: resumable, retried, hashed while it
is written). Files are written only inside the models folder (hub_resolve.local_path checks
every name), and a read-only folder is one line, not a traceback.

Progress is reported as typed events (pull_events) to a callback; nothing here prints.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from localr1.models.download_errors import (
    NotEnoughSpaceError,
    PullInterrupted,
    ReadOnlyFolderError,
    raise_if_no_space,
)
from localr1.models.hardware import free_disk_bytes
from localr1.models.hf_cache import find_in_hf_cache
from localr1.models.hub_resolve import PullPlan, RemoteFile, one_line
from localr1.models.hub_transfer import DownloadedFile, DownloadOptions, Transfer, only_pull_of
from localr1.models.part_writer import hash_file, hexdigests, matches, new_digests
from localr1.models.pull_events import (
    BytesDone,
    FileDone,
    FileStarted,
    Notice,
    OnEvent,
    ignore_event,
)
from localr1.sizes import format_bytes

PART_SUFFIX = ".part"
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# os.link failures that mean "no hard link possible here" (another disk, a filesystem without
# them, too many links): only these fall back to a copy.
_NO_HARD_LINK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK})


# ---- downloading -------------------------------------------------------------------------------


def download(plan: PullPlan, models_dir: Path, on_event: OnEvent = ignore_event,
             options: DownloadOptions | None = None,
             cancel: threading.Event | None = None) -> tuple[DownloadedFile, ...]:
    """Fetch every file of the plan into models_dir, verified; resumes `.part` files."""
    options = options or DownloadOptions()
    destinations = plan.local_paths(models_dir)
    for folder in dict.fromkeys(d.parent for d in destinations):
        ensure_writable(folder, models_dir)
    _check_space(plan, destinations, options)
    results = []
    for index, (remote, dest) in enumerate(zip(plan.files, destinations, strict=True), start=1):
        results.append(download_file(remote, dest, on_event=on_event, options=options,
                                     cancel=cancel, index=index, count=len(plan.files)))
    return tuple(results)


def ensure_writable(folder: Path, models_dir: Path) -> None:
    """Create `folder` and check a file can be written in it; a one-line error otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        if exc.errno in _READ_ONLY_ERRNOS:
            raise ReadOnlyFolderError(
                f"models folder {models_dir} is read-only ({exc.strerror}); make it writable "
                "or set LOCALR1_MODELS to another folder") from None
        raise ReadOnlyFolderError(f"cannot write in the models folder {models_dir}: "
                                  f"{exc.strerror or one_line(exc)}") from None


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


def download_file(remote: RemoteFile, dest: Path, *, on_event: OnEvent = ignore_event,
                  options: DownloadOptions | None = None,
                  cancel: threading.Event | None = None, index: int = 1,
                  count: int = 1) -> DownloadedFile:
    """One verified file at `dest`: already there, from the HF cache, or downloaded."""
    options = options or DownloadOptions()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    started = _starter(remote, on_event, index, count)
    if dest.is_file():
        if dest.stat().st_size == remote.size:
            started("verify", 0)
            digests = _interruptible(lambda: hash_file(dest, remote, on_event, cancel), None,
                                     remote.size)
            if matches(remote, digests):
                on_event(FileDone(remote.filename, "already downloaded"))
                return DownloadedFile(dest, remote.size, digests[0], "already downloaded")
        on_event(Notice(f"{remote.filename} on disk does not match the Hub's; fetching it again"))
        dest.unlink()
    with only_pull_of(part, remote.filename):
        if options.use_hf_cache and remote.sha256:
            cached = find_in_hf_cache(remote.sha256, remote.size, remote.repo)
            if cached is not None:
                result = _from_hf_cache(remote, cached, dest, started, on_event, cancel)
                if result is not None:
                    part.unlink(missing_ok=True)
                    return result
        return Transfer(remote, dest, part, started, on_event, options, cancel).run()


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


def _from_hf_cache(remote: RemoteFile, cached: Path, dest: Path, started, on_event: OnEvent,
                   cancel: threading.Event | None) -> DownloadedFile | None:
    """Hard-link (same disk) or copy a cached blob, verified; None if it does not verify.
    The temporary name is new each time and never opened for writing if it exists: a fixed
    name could be another pull's hard link to the blob, and writing it would truncate the
    user's cache."""
    tmp = dest.with_name(f".localr1-{secrets.token_hex(6)}.linking")
    try:
        try:
            os.link(cached, tmp)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINK_ERRNOS:
                on_event(Notice(f"cannot link {cached} ({one_line(exc)}); downloading instead"))
                return None
            how = "copied from the Hugging Face cache"
            started("copy", 0)
            ok = _copy_hashed(cached, tmp, remote, on_event, cancel)
        else:
            how = "linked from the Hugging Face cache"
            started("verify", 0)
            ok = matches(remote, hash_file(tmp, remote, on_event, cancel))
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
    digests = new_digests(remote)
    try:
        with open(source, "rb") as src, open(target, "xb") as out:
            while block := src.read(8 << 20):
                out.write(block)
                for digest in digests:
                    digest.update(block)
                on_event(BytesDone(len(block)))
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise_if_no_space(exc, target)
        raise
    return matches(remote, hexdigests(digests))


def remove_partial(path: Path) -> None:
    """Delete a file's leftover `.part` (used by `rm`)."""
    path.with_name(path.name + PART_SUFFIX).unlink(missing_ok=True)


def copy_file(source: Path, target: Path) -> None:
    """Copy a file (import --copy), cleaning up a half-written target on failure."""
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise_if_no_space(exc, target)
        raise
