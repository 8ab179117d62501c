"""Starting a helper process (multiprocessing's spawn) from a terminal program: the eval's
answer checker and the TUI's and serve's model process.

Two things go wrong otherwise. Ctrl+C reaches the whole process group, and a child still
starting Python dies of it with a traceback on the terminal: SIGINT is blocked while it starts
(the mask is inherited) and the child ignores it, then unblocks it (`ignore_ctrl_c`). And under
Textual, sys.stderr is a capture whose fileno() is -1, which multiprocessing's resource tracker
passes on ("bad value(s) in fds_to_keep"): the real stderr stands in while the tracker starts.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from multiprocessing import resource_tracker


@contextlib.contextmanager
def starting_child() -> Iterator[None]:
    """Around `Process.start()`: SIGINT held back from this thread and the child."""
    with _stderr_with_a_file():
        # Started by the first spawn otherwise, and starting it unblocks SIGINT in this thread.
        resource_tracker.ensure_running()
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks (nor process groups)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_ctrl_c() -> None:
    """In the child, first thing: Ctrl+C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started us
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _stderr_with_a_file() -> Iterator[None]:
    try:
        usable = sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if usable or sys.__stderr__ is None:
        yield
        return
    captured, sys.stderr = sys.stderr, sys.__stderr__
    try:
        yield
    finally:
        sys.stderr = captured
