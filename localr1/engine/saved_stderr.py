"""The process's real stderr, kept for messages llama-cpp-python would otherwise swallow.

With verbose=False, llama-cpp-python points fd 2 at /dev/null while it loads a model (process
wide). Debug log lines and the one-line abort message must still reach the user, so they go to
a duplicate of fd 2 taken before any load starts.
"""

from __future__ import annotations

import contextlib
import os

_fd: int | None = None


def keep() -> None:
    """Duplicate fd 2 now (idempotent); call before llama-cpp-python first silences it."""
    global _fd
    if _fd is None:
        with contextlib.suppress(OSError):
            _fd = os.dup(2)


def write(text: str) -> None:
    """Write to the saved stderr (fd 2 itself if none was kept); never raises."""
    data = text.encode("utf-8", "replace")
    fd = 2 if _fd is None else _fd
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]
