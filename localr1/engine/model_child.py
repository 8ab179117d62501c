"""The parent's handle on one model process (engine/model_host is the child's side): starting
it with its model, the thread that reads its messages into per-id inboxes, its last line once it
has ended, and closing it. engine/model_process builds the engines on it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Any

from localr1.child_process import starting_child
from localr1.engine.events import ModelInfo
from localr1.engine.llama_engine import EngineConfig
from localr1.engine.model_host import host_main
from localr1.errors import GenerationError, LocalR1Error

# How often a turn or the decoder looks at its cancel events while waiting for the child
# (the events cannot wake a queue): well under what a user notices after pressing stop.
CANCEL_POLL = 0.05
# A child asked to close gets this long to unload before it is killed.
CLOSE_GRACE = 10.0



class ChildGone:
    """Put in every inbox when the child has ended."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Child:
    """One child process and the thread that reads its messages into per-id inboxes."""

    def __init__(self, config: EngineConfig) -> None:
        """Start the child; `wait_ready` waits for its model."""
        self.config = config
        context = multiprocessing.get_context("spawn")  # fork would copy llama.cpp's threads
        self._connection, child_end = context.Pipe()
        handle, self.log_path = tempfile.mkstemp(prefix="localr1-model-", suffix=".log")
        os.close(handle)
        # However this ends (closed, a Ctrl+C during a load, the app quitting), the log goes.
        self._remove_log = weakref.finalize(self, _remove, self.log_path)
        self.process = context.Process(target=host_main, args=(child_end, config,
                                                                self.log_path),
                                       name="localr1-model", daemon=True)
        self._send_lock = threading.Lock()
        self._inboxes: dict[int, queue.SimpleQueue] = {}
        self._inbox_lock = threading.Lock()
        self.gone: ChildGone | None = None
        self.ended = threading.Event()  # set with `gone`, once every inbox has heard it
        self.info: ModelInfo | None = None
        try:
            with starting_child():
                self.process.start()
        except BaseException:
            self._connection.close()
            self._remove_log()
            raise
        finally:
            child_end.close()  # ours: its EOF must come when the child ends

    def wait_ready(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Until the model is loaded: its load error (one line) raised here; LoadStopped
        (the child killed) as soon as `stop()` says so."""
        try:
            while not self._connection.poll(CANCEL_POLL):
                if stop():
                    self.close()
                    raise LoadStopped
            kind, value = self._connection.recv()
        except (EOFError, OSError):
            if stop():  # closed from another thread while it loaded
                raise LoadStopped from None
            self.process.join(CLOSE_GRACE)
            reason = self.last_words() or f"the model process for " \
                                           f"{self.config.model_path.name} ended while " \
                                           f"loading (exit code {self.process.exitcode})"
            self.close()
            raise LocalR1Error(reason) from None
        if kind == "failed":
            self.close()
            raise value
        self.info = value
        threading.Thread(target=self._read, name="localr1-model-reader", daemon=True).start()

    # ---- messages ----------------------------------------------------------------------------

    def inbox(self, key: int) -> queue.SimpleQueue:
        box: queue.SimpleQueue = queue.SimpleQueue()
        with self._inbox_lock:
            if self.gone is not None:
                box.put(self.gone)
            else:
                self._inboxes[key] = box
        return box

    def drop_inbox(self, key: int) -> None:
        with self._inbox_lock:
            self._inboxes.pop(key, None)

    def send(self, *message: Any) -> bool:
        """False when the child is gone (its inboxes say why)."""
        with self._send_lock:
            try:
                self._connection.send(message)
            except (OSError, ValueError):  # a broken pipe, or closed by close()
                return False
        return True

    def _read(self) -> None:
        while True:
            try:
                message = self._connection.recv()
            except (EOFError, OSError, ValueError):
                break
            if message[0] == "run_done":  # ("run_done", error): no id
                key, message = DECODER_INBOX, ("run_done", None, message[1])
            elif message[0] == "request_event":  # the decoder's, for any of its requests
                key = DECODER_INBOX
            else:
                key = message[1]
            with self._inbox_lock:
                box = self._inboxes.get(key)
            if box is not None:
                box.put(message)
        self.process.join(CLOSE_GRACE)
        gone = ChildGone(self.last_words() or
                          f"the model process ended unexpectedly (exit code "
                          f"{self.process.exitcode})")
        with self._inbox_lock:
            self.gone = gone
            boxes = list(self._inboxes.values())
        for box in boxes:
            box.put(gone)
        self.ended.set()

    def last_words(self) -> str | None:
        """The child's last line of its own ("localr1: ..."), without that prefix."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            lines = log.read().decode("utf-8", "replace").splitlines()
            for line in reversed(lines):
                if line.startswith("localr1: "):
                    return line.removeprefix("localr1: ").strip()
        return None

    def close(self) -> None:
        """Ask the child to end (a loading one is killed: it would not hear us)."""
        if self.info is None or not self.send("close"):
            self.process.kill()
        self.process.join(CLOSE_GRACE)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        with contextlib.suppress(OSError):
            self._connection.close()
        self._remove_log()


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class LoadStopped(Exception):
    """A restart given up: the turn was stopped, or the engine closed, while it loaded."""


# The decoder's messages (its requests' events, run_done) go to its one inbox, under this key.
DECODER_INBOX = -1



def next_message(box: queue.SimpleQueue, polling: bool = False) -> Any:
    """The next message in `box`; None after a poll interval when `polling` (cancel events
    need a look: they cannot wake a queue); GenerationError (the child's last line) when the
    child has ended."""
    try:
        message = box.get(timeout=CANCEL_POLL if polling else None)
    except queue.Empty:
        return None
    if isinstance(message, ChildGone):
        raise GenerationError(message.reason)
    return message
