"""What `localr1 pull` shows while it works, on stderr.

On a terminal: one line redrawn in place (at most ten times a second) with the bytes, a bar,
the speed over the last few seconds and the time left. Anywhere else (a log, CI, a pipe): a
line when a file starts, a progress line at most every ten seconds, and a line when it is done,
so logs stay short. Notices (a retry, a restart) always get a line of their own.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from localr1.durations import format_duration
from localr1.models.pull_events import BytesDone, FileDone, FileStarted, Notice, PullEvent
from localr1.sizes import format_bytes
from localr1.terminal_text import visible_controls

_ACTIONS = {"download": "pulling", "resume": "resuming", "verify": "verifying",
            "copy": "copying"}
_REDRAW_S = 0.1
_PLAIN_EVERY_S = 10.0
_SPEED_WINDOW_S = 5.0
_BAR_WIDTH = 24


class PullProgressPrinter:
    """A PullEvent callback that draws progress on `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, *, is_tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty() if is_tty is None else is_tty
        self.clock = clock
        self.width = width or (lambda: shutil.get_terminal_size((80, 24)).columns)
        self._file: FileStarted | None = None
        self._done = 0
        self._started_at = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._last_draw = 0.0
        self._bar_shown = False

    def __call__(self, event: PullEvent) -> None:
        if isinstance(event, FileStarted):
            self._start(event)
        elif isinstance(event, BytesDone):
            self._advance(event.n_bytes)
        elif isinstance(event, Notice):
            self._line(f"  {event.message}", redraw=True)
        elif isinstance(event, FileDone):
            self._finish(event)

    def close(self) -> None:
        """End a bar line left open (after an error or Ctrl+C)."""
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    # ---- events ------------------------------------------------------------------------------

    def _start(self, event: FileStarted) -> None:
        self._file = event
        self._done = event.done_bytes
        self._started_at = self.clock()
        self._samples = deque([(self._started_at, self._done)])
        self._last_draw = 0.0 if self.is_tty else self._started_at  # plain: a line per 10 s
        if self.is_tty:
            self._draw(force=True)
            return
        action = _ACTIONS.get(event.action, event.action)
        where = f" from {format_bytes(event.done_bytes)}" if event.done_bytes else ""
        self._line(f"{self._label()}: {action} {format_bytes(event.total_bytes)}{where}")

    def _advance(self, n_bytes: int) -> None:
        if self._file is None:
            return
        self._done += n_bytes
        now = self.clock()
        self._samples.append((now, self._done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _SPEED_WINDOW_S:
            self._samples.popleft()
        if self.is_tty:
            self._draw()
        elif now - self._last_draw >= _PLAIN_EVERY_S:
            self._last_draw = now
            self._line(f"{self._label()}: {self._numbers()}")

    def _finish(self, event: FileDone) -> None:
        file = self._file
        elapsed = self.clock() - self._started_at
        if file is not None:
            self._done = file.total_bytes
        if self.is_tty and file is not None:
            self._draw(force=True)
            self.close()
        moved = self._done - (file.done_bytes if file else 0)
        rate = f", {format_bytes(int(moved / elapsed))}/s" if elapsed > 0.5 and moved else ""
        size = format_bytes(file.total_bytes) if file else ""
        self._line(f"{self._label(event.filename)}: {event.how} ({size} in "
                   f"{format_duration(elapsed)}{rate})")
        self._file = None

    # ---- drawing -----------------------------------------------------------------------------

    def _label(self, filename: str | None = None) -> str:
        file = self._file
        name = filename or (file.filename if file else "")
        if self.is_tty:  # a Hub file name is data: its control characters are shown, not run
            name = visible_controls(name)
        if file is not None and file.count > 1:
            return f"[{file.index}/{file.count}] {name}"
        return name

    def _speed(self) -> float:
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 - t0 > 0.2 else 0.0

    def _numbers(self) -> str:
        file = self._file
        total = file.total_bytes if file else 0
        percent = 100 * self._done // total if total else 100
        text = f"{percent:3d}% {format_bytes(self._done)}/{format_bytes(total)}"
        speed = self._speed()
        if speed > 0:
            text += f" {format_bytes(int(speed))}/s"
            text += f" ETA {format_duration(max(0, total - self._done) / speed)}"
        return text

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_draw < _REDRAW_S:
            return
        self._last_draw = now
        file = self._file
        total = file.total_bytes if file else 0
        action = _ACTIONS.get(file.action, file.action) if file else ""
        numbers = self._numbers()
        # A line longer than the terminal wraps, and "\r" can then no longer redraw it. The
        # numbers matter most; the file name is shortened (keeping its end, where the quant
        # is), and the bar shrinks or goes first.
        room = self.width() - 1 - len(action) - len(numbers) - 2
        label = self._label()
        bar_width = max(0, min(_BAR_WIDTH, room - len(label) - 1))
        if bar_width < 10:
            bar_width = 10 if room - 11 >= 16 else 0
        label_room = max(8, room - (bar_width + 1 if bar_width else 0))
        if len(label) > label_room:
            label = "…" + label[-(label_room - 1):]
        filled = bar_width * self._done // total if total else bar_width
        bar = "█" * filled + "░" * (bar_width - filled)
        line = " ".join(part for part in (action, label, bar, numbers) if part)
        self.stream.write(f"\r\x1b[K{line[: self.width() - 1]}")
        self.stream.flush()
        self._bar_shown = True

    def _line(self, text: str, redraw: bool = False) -> None:
        if self.is_tty:
            text = visible_controls(text)
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if redraw and self.is_tty and self._file is not None:
            self._draw(force=True)
