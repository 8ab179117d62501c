"""Run a command on a real pseudo-terminal and read all it writes, with a deadline: a child that
hangs fails the test with what it wrote so far instead of hanging the suite."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest


def run_on_terminal(argv: Sequence[str | Path], *, env: dict[str, str] | None = None,
                    keyboard: bool = False, size: tuple[int, int] | None = None,
                    timeout: float = 120) -> tuple[int, bytes]:
    """Run `argv` with stdout and stderr on one pseudo-terminal (and stdin too with
    `keyboard`, else /dev/null); its exit status and every byte the terminal got. `size` is
    (columns, rows); None leaves the pty's own 0x0. Fails the test unless the child has closed
    the terminal and exited within `timeout` seconds."""
    leader, follower = pty.openpty()
    if size is not None:
        columns, rows = size
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    # A session of its own: the whole group can be killed at the deadline.
    process = subprocess.Popen([str(part) for part in argv], env=env,
                               stdin=follower if keyboard else subprocess.DEVNULL,
                               stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout

    def fail(what: str) -> NoReturn:
        shown = b"".join(chunks)[-2000:].decode("utf-8", "replace")
        pytest.fail(f"{what}; its last output:\n{shown}")

    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([leader], [], [], left)[0]:
                fail(f"the terminal was still open after {timeout:g} s and the command did "
                     "not exit")
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data)
        try:
            code = process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            fail(f"the command closed the terminal but did not exit within {timeout:g} s")
        return code, b"".join(chunks)
    finally:
        os.close(leader)
        if process.returncode is None:  # unreaped, so no other group can have its id yet
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # grandchildren holding the pty too
            process.wait()


def localr1_on_terminal(*args: str | Path, env: dict[str, str] | None = None,
                        timeout: float = 120) -> tuple[int, bytes]:
    """`python -m localr1 ARGS` on a pseudo-terminal, stdin from /dev/null."""
    return run_on_terminal([sys.executable, "-m", "localr1", *args], env=env, timeout=timeout)
