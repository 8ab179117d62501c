"""A Textual driver that keeps drawing while llama.cpp loads a model.

With verbose=False, llama-cpp-python points file descriptors 1 and 2 at /dev/null for as long
as `Llama()` loads a model (process-wide, from the loading thread). Textual draws on fd 2, so
every frame painted meanwhile would be lost and the screen stays blank or stale. This driver
writes to its own duplicate of the terminal's descriptor, which that redirection leaves alone.

If llama.cpp aborts the process while the app runs, the driver never gets to stop: its hook on
GGML's abort puts the terminal back first (the same sequences LinuxDriver writes when it stops,
and the saved termios modes), so the user's shell is usable and the abort line readable.
"""

from __future__ import annotations

import contextlib
import os
import sys

from textual.driver import Driver

from localr1.engine import ggml_abort

# What LinuxDriver writes when it stops: mouse reporting, bracketed paste, focus events and the
# Kitty keyboard protocol off, line wrap on, leave the alternate screen, show the cursor.
RESTORE_SEQUENCES = (
    "\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l"
    "\x1b[?2004l\x1b[?1004l\x1b[<u\x1b[?7h"
    "\x1b[?1049l\x1b[?25h"
)


def restore_terminal(fd: int, attrs: list | None) -> None:
    """Undo application mode on `fd` right now (no writer thread: the process is dying)."""
    if attrs is not None:
        import termios

        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    with contextlib.suppress(OSError):
        os.write(fd, RESTORE_SEQUENCES.encode())


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

        def start_application_mode(self) -> None:
            super().start_application_mode()
            ggml_abort.set_before_abort(
                lambda: restore_terminal(self._file.fileno(), self.attrs_before))

        def stop_application_mode(self) -> None:
            ggml_abort.set_before_abort(None)
            super().stop_application_mode()

        def close(self) -> None:
            super().close()  # stops (joins) the writer thread first
            with contextlib.suppress(OSError):
                self._file.close()

    return TerminalDriver
