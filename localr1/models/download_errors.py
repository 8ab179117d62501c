"""What a download can fail with, each a one-line message for the front ends."""

from __future__ import annotations

import errno
from pathlib import Path

from localr1.errors import LocalR1Error
from localr1.sizes import format_bytes


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


class ReadOnlyFolderError(LocalR1Error):
    """Nothing can be written in the models folder (read-only, or not ours)."""


def raise_if_no_space(exc: OSError, path: Path, kept: bool = False) -> None:
    if exc.errno == errno.ENOSPC:
        then = "pull again to resume (the partial file is kept)" if kept else "try again"
        raise NotEnoughSpaceError(f"no space left on the disk while writing {path}; free some "
                                  f"space, then {then}") from None
