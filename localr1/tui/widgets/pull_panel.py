"""A model download in place: name, size and fit label, a live progress bar, cancel / resume.

The pull runs in a thread worker through `pull_plan.plan_pull` and `library.pull_model` (the
same code as `localr1 pull`: its fit text, Range resume, sha256, free-space check). Its
progress callback fires for every chunk, so it only bumps counters in a `PullCounters`; a timer
on the event loop reads them a few times a second. Cancelling sets the pull's cancel event: the
`.part` file stays and pulling the same name again resumes it. The panel posts
`PullPanel.Finished` with the model's path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, ProgressBar, Static

from localr1.durations import format_duration
from localr1.errors import LocalR1Error
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    from textual.timer import Timer

    from localr1.models.pull_events import PullEvent

REFRESH_SECONDS = 0.25
ACTIONS = {"download": "downloading", "resume": "resuming", "verify": "verifying",
           "copy": "copying"}


@dataclass
class PullCounters:
    """Written by the pull's thread, read by the event loop (plain attribute writes)."""

    total_bytes: int = 0
    finished_bytes: int = 0  # files completed so far
    file_done: int = 0  # bytes of the current file on disk (or hashed)
    file_total: int = 0
    file_label: str = ""
    transferred: int = 0  # bytes that moved in this session (speed excludes resumed bytes)
    notes: list[str] = field(default_factory=list)

    def __call__(self, event: PullEvent) -> None:
        from localr1.models.pull_events import BytesDone, FileDone, FileStarted, Notice

        if isinstance(event, BytesDone):
            self.file_done += event.n_bytes
            self.transferred += event.n_bytes
        elif isinstance(event, FileStarted):
            self.file_done, self.file_total = event.done_bytes, event.total_bytes
            part = f" ({event.index}/{event.count})" if event.count > 1 else ""
            self.file_label = f"{ACTIONS.get(event.action, event.action)}{part}"
        elif isinstance(event, FileDone):
            self.finished_bytes += self.file_total
            self.file_done = self.file_total = 0
        elif isinstance(event, Notice):
            self.notes.append(event.message)

    @property
    def done_bytes(self) -> int:
        return self.finished_bytes + self.file_done


class PullPanel(Vertical):
    """Hidden until `start(name)`; shows one pull at a time."""

    DEFAULT_CSS = """
    PullPanel { height: auto; display: none; padding: 0 1; border-top: solid $primary; }
    PullPanel.-active { display: block; }
    PullPanel #pull-title { text-style: bold; }
    PullPanel #pull-fit { color: $text-muted; }
    PullPanel Horizontal { height: auto; }
    PullPanel ProgressBar { width: 1fr; height: 3; padding-top: 1; }
    PullPanel #pull-state { height: auto; }
    PullPanel.-failed #pull-state { color: $text-error; }
    PullPanel Button { margin-left: 1; }
    """

    @dataclass
    class Finished(Message):
        name: str
        path: Path
        already_installed: bool

    @dataclass
    class Stopped(Message):
        """Cancelled (resumable) or failed; `reason` is one line."""

        name: str
        reason: str
        resumable: bool

    def __init__(self, models_dir: Path, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.models_dir = models_dir
        self.name_pulling: str | None = None
        self._cancel = threading.Event()
        self._counters = PullCounters()
        self._timer: Timer | None = None
        self._speed_mark: tuple[float, int] | None = None
        self._speed = 0.0

    def compose(self) -> ComposeResult:
        yield Static(id="pull-title")
        yield Static(id="pull-fit")
        with Horizontal():
            yield ProgressBar(show_eta=False, id="pull-bar")
            # One button: Cancel while it runs, Resume or Retry after it stopped.
            yield Button("Cancel", id="pull-action", variant="warning")
        yield Static(id="pull-state")

    @property
    def running(self) -> bool:
        return self.name_pulling is not None and self.has_class("-running")

    def start(self, name: str) -> None:
        """Resolve `name` on the Hub and download it (a no-op while a pull runs)."""
        if self.running:
            self.notify(f"{self.name_pulling} is still downloading.", severity="warning",
                        markup=False)
            return
        self.name_pulling = name
        self._cancel = threading.Event()
        self._counters = PullCounters()
        self._speed_mark, self._speed = None, 0.0
        self.set_classes("-active -running")
        self.query_one("#pull-action").display = True
        self.query_one("#pull-title", Static).update(Content(name))
        self.query_one("#pull-fit", Static).update(Content("asking the Hub…"))
        self.query_one("#pull-bar", ProgressBar).update(total=None, progress=0)
        self._state("")
        self._action("Cancel", "warning")
        self._timer = self.set_interval(REFRESH_SECONDS, self._refresh_progress)
        self._pull(name, self._cancel, self._counters)

    def on_unmount(self) -> None:
        # The app is closing: stop the download; its .part file stays for the next pull.
        self._cancel.set()

    def cancel(self) -> None:
        if self.running:
            self._cancel.set()
            self._state("stopping…")

    @on(Button.Pressed, "#pull-action")
    def _action_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if self.running:
            self.cancel()
        elif self.name_pulling is not None:  # resume or retry
            self.start(self.name_pulling)

    def _action(self, label: str, variant: str) -> None:
        button = self.query_one("#pull-action", Button)
        button.label = label
        button.variant = variant

    @work(thread=True, exclusive=True, group="pull", exit_on_error=False)
    def _pull(self, name: str, cancel: threading.Event, counters: PullCounters) -> None:
        from localr1.models.download_errors import PullInterrupted
        from localr1.models.library import pull_model
        from localr1.models.pull_plan import plan_pull

        try:
            planned = plan_pull(name)
            counters.total_bytes = planned.plan.size_bytes
            self.app.call_from_thread(self._planned, planned.name,
                                      f"{planned.repo} · {planned.size_text}", planned.fit_text)
            result = pull_model(planned.plan, self.models_dir, on_event=counters, cancel=cancel)
        except PullInterrupted as exc:
            self.app.call_from_thread(self._stopped, name, str(exc), True)
        except LocalR1Error as exc:
            self.app.call_from_thread(self._stopped, name, str(exc), False)
        except Exception as exc:  # report anything; the app stays usable
            self.app.call_from_thread(self._stopped, name, f"{type(exc).__name__}: {exc}",
                                      False)
        else:
            self.app.call_from_thread(self._finished, planned.name, result.model.path,
                                      result.already_installed)

    def _planned(self, name: str, facts: str, fit: str) -> None:
        self.query_one("#pull-title", Static).update(Content(f"{name} · {facts}"))
        self.query_one("#pull-fit", Static).update(Content(fit))
        self.query_one("#pull-bar", ProgressBar).update(total=self._counters.total_bytes or None)

    def _refresh_progress(self) -> None:
        counters = self._counters
        bar = self.query_one("#pull-bar", ProgressBar)
        if counters.total_bytes:
            bar.update(total=counters.total_bytes, progress=counters.done_bytes)
        now = time.monotonic()
        if self._speed_mark is not None:
            seconds = now - self._speed_mark[0]
            if seconds >= 1.0:
                self._speed = (counters.transferred - self._speed_mark[1]) / seconds
                self._speed_mark = (now, counters.transferred)
        else:
            self._speed_mark = (now, counters.transferred)
        if counters.file_label and not self._cancel.is_set():
            text = f"{counters.file_label} · {format_bytes(counters.done_bytes)} of " \
                   f"{format_bytes(counters.total_bytes)}"
            if self._speed > 0:
                left = (counters.total_bytes - counters.done_bytes) / self._speed
                text += f" · {format_bytes(int(self._speed))}/s · {format_duration(left)} left"
            self._state(text)

    def _end(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.remove_class("-running")

    def _finished(self, name: str, path: Path, already_installed: bool) -> None:
        self._end()
        self.query_one("#pull-bar", ProgressBar).update(total=1, progress=1)
        self._state("already installed and verified" if already_installed else
                    f"done: {path}")
        self.name_pulling = None
        self.query_one("#pull-action").display = False
        self.post_message(self.Finished(name, path, already_installed))

    def _stopped(self, name: str, reason: str, resumable: bool) -> None:
        self._end()
        self.add_class("-failed")
        self._state(reason)
        if not self._counters.total_bytes:  # it never got as far as the Hub's answer
            self.query_one("#pull-fit", Static).update("")
            self.query_one("#pull-bar", ProgressBar).update(total=100, progress=0)
        self._action("Resume" if resumable else "Retry", "primary")
        self.post_message(self.Stopped(name, reason, resumable))

    def _state(self, text: str) -> None:
        self.query_one("#pull-state", Static).update(Content(text))

