"""A Textual driver that keeps drawing while llama.cpp loads a model.

With verbose=False, llama-cpp-python points file descriptors 1 and 2 at /dev/null for as long
as `Llama()` loads a model (process-wide, from the loading thread). Textual draws on fd 2, so
every frame painted meanwhile would be lost and the screen stays blank or stale. This driver
writes to its own duplicate of the terminal's descriptor, which that redirection leaves alone.
"""

from __future__ import annotations

import contextlib
import os
import sys

from textual.driver import Driver


def terminal_driver_class() -> type[Driver] | None:
    """The driver for `App(driver_class=...)`; None (Textual's choice) off POSIX terminals."""
    if os.name != "posix" or sys.__stderr__ is None or not sys.__stderr__.isatty():
        return None
    from textual.drivers.linux_driver import LinuxDriver

    class TerminalDriver(LinuxDriver):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            stderr = sys.__stderr__
            assert stderr is not None
            self._file = os.fdopen(os.dup(stderr.fileno()), "w", encoding=stderr.encoding,
                                   errors="replace", buffering=1 << 16)

        def close(self) -> None:
            super().close()  # stops (joins) the writer thread first
            with contextlib.suppress(OSError):
                self._file.close()

    return TerminalDriver
