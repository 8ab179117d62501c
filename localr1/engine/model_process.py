"""A model loaded in a child process, for the front ends that must outlive it: the TUI and
`serve` with RPC workers (see model_host for why).

    engine = load_engine(config)        # in this process, or a ProcessEngine with config.rpc
    for event in engine.stream_chat(history, params): ...
    decoder = open_decoder(engine, parallel, n_ctx, threads)   # serve's slots, either way

A ProcessEngine gives what the front ends use of `Engine` (info, stream_chat, prepare_prompt,
close) and `ProcessDecoder` what they use of `ParallelDecoder` (run over a RequestFeed). When
the child ends (a lost worker, a stalled one, a crash), every turn and request in flight fails
with its last line ("RPC worker 127.0.0.1:50052 stopped answering (connection refused)") as a
GenerationError, and the next turn, or serve's reload, starts a new child: the workers are
probed again and the model sent to them again.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.child_process import starting_child
from localr1.engine.events import Event, GenerationParams, ModelInfo, TurnDone, TurnStats
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.model_host import host_main
from localr1.engine.parallel_decoder import (
    EventSink,
    ParallelDecoder,
    RequestFeed,
    SequenceRequest,
)
from localr1.engine.prompting import PreparedPrompt
from localr1.errors import GenerationError, LocalR1Error

# How often a turn or the decoder looks at its cancel events while waiting for the child
# (the events cannot wake a queue): well under what a user notices after pressing stop.
_CANCEL_POLL = 0.05
# A child asked to close gets this long to unload before it is killed.
_CLOSE_GRACE = 10.0


def load_engine(config: EngineConfig) -> Engine | ProcessEngine:
    """The model for a front end that must stay up: in this process, or in a child when RPC
    workers take part (a lost worker then ends the child, not the app)."""
    if config.rpc:
        return ProcessEngine.start(config)
    return Engine.load(config)


def open_decoder(engine: Engine | ProcessEngine, parallel: int, n_ctx_per_sequence: int,
                 threads: int | None = None) -> ParallelDecoder | ProcessDecoder:
    """serve's parallel decoder, where the engine's model is."""
    if isinstance(engine, ProcessEngine):
        return ProcessDecoder(engine, parallel, n_ctx_per_sequence, threads)
    return ParallelDecoder(engine, parallel, n_ctx_per_sequence, threads)


def check_answer_grammar(engine: Engine | ProcessEngine, grammar: str) -> None:
    """GrammarError now for a grammar llama.cpp would refuse, where the model is."""
    if isinstance(engine, ProcessEngine):
        engine.check_grammar(grammar)
        return
    from localr1.engine.decode_loop import check_grammar

    check_grammar(engine, grammar)


class _ChildGone:
    """Put in every inbox when the child has ended."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Child:
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
        self.gone: _ChildGone | None = None
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
        """Until the model is loaded: its load error (one line) raised here; _LoadStopped
        (the child killed) as soon as `stop()` says so."""
        try:
            while not self._connection.poll(_CANCEL_POLL):
                if stop():
                    self.close()
                    raise _LoadStopped
            kind, value = self._connection.recv()
        except (EOFError, OSError):
            if stop():  # closed from another thread while it loaded
                raise _LoadStopped from None
            self.process.join(_CLOSE_GRACE)
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
                key, message = _DECODER_INBOX, ("run_done", None, message[1])
            elif message[0] == "request_event":  # the decoder's, for any of its requests
                key = _DECODER_INBOX
            else:
                key = message[1]
            with self._inbox_lock:
                box = self._inboxes.get(key)
            if box is not None:
                box.put(message)
        self.process.join(_CLOSE_GRACE)
        gone = _ChildGone(self.last_words() or
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
        self.process.join(_CLOSE_GRACE)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        with contextlib.suppress(OSError):
            self._connection.close()
        self._remove_log()


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class _LoadStopped(Exception):
    """A restart given up: the turn was stopped, or the engine closed, while it loaded."""


# The decoder's messages (its requests' events, run_done) go to its one inbox, under this key.
_DECODER_INBOX = -1


class ProcessEngine:
    """A model in a child process. Thread-safe like Engine: turns may run from several
    threads; a new child is started when the previous one ended."""

    def __init__(self, config: EngineConfig, child: _Child) -> None:
        self.config = config
        self._child = child
        self._loading: _Child | None = None  # a restart under way (close() kills it)
        self._ids = itertools.count()
        self._restart_lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, config: EngineConfig) -> ProcessEngine:
        """Load `config` in a new child; its load error (one line) is raised here."""
        child = _Child(config)
        child.wait_ready()
        return cls(config, child)

    @property
    def info(self) -> ModelInfo:
        return self._child.info

    def child(self, stop: Callable[[], bool] = lambda: False) -> _Child:
        """The live child, starting a new one when the last one ended (a chat turn: the TUI
        goes on after a lost worker). _LoadStopped when `stop()` or close() ends the wait."""
        with self._restart_lock:
            if self._closed:
                raise GenerationError("the model was closed")
            if self._child.gone is not None:
                self._child.close()
                if stop():
                    raise _LoadStopped
                self._loading = fresh = _Child(self.config)
                try:
                    fresh.wait_ready(lambda: self._closed or stop())
                finally:
                    self._loading = None
                self._child = fresh
            return self._child

    def current_child(self) -> _Child:
        """The child now, live or ended: never a new one."""
        return self._child

    def next_id(self) -> int:
        return next(self._ids)

    def call(self, name: str, *args: Any) -> Any:
        """Run one of model_host's calls in the child and return its value; GenerationError
        when the child has ended. Never a restart: serve's scheduler reloads the model itself
        (a request's thread must not)."""
        return self.call_on(self._child, name, *args)

    def call_on(self, child: _Child, name: str, *args: Any) -> Any:
        key = self.next_id()
        box = child.inbox(key)
        try:
            child.send("call", key, name, args)
            reply = box.get()
        finally:
            child.drop_inbox(key)
        if isinstance(reply, _ChildGone):
            raise GenerationError(reply.reason)
        kind, _key, value = reply
        if kind == "raised":
            raise value
        return value

    def prepare_prompt(self, history: Sequence[ChatMessage], params: GenerationParams, *,
                       system_prompt: str | None = None,
                       n_ctx: int | None = None) -> PreparedPrompt:
        return self.call("prepare_prompt", list(history), params, system_prompt, n_ctx)

    def check_grammar(self, grammar: str) -> None:
        self.call("check_grammar", grammar)

    def stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams, *,
                    system_prompt: str | None = None, cancel: threading.Event | None = None,
                    answer_now: threading.Event | None = None) -> Iterator[Event]:
        """One turn, streamed from the child; GenerationError (the child's last line) when it
        ends midway. The events already yielded stand: the caller keeps the partial answer.
        After a lost worker the model is loaded again first; Stop during that load ends the
        turn as cancelled."""
        started = time.perf_counter()
        try:
            child = self.child(stop=lambda: cancel is not None and cancel.is_set())
        except _LoadStopped:
            yield TurnDone(cancelled_before_start(time.perf_counter() - started))
            return
        turn = self.next_id()
        box = child.inbox(turn)
        flags = _Flags(child, turn, cancel, answer_now)
        finished = False
        try:
            child.send("chat", turn, list(history), params, system_prompt)
            while True:
                reply = _get(box, flags.watching)
                flags.forward()
                if reply is None:
                    continue
                if isinstance(reply, _ChildGone):
                    raise GenerationError(reply.reason)
                kind, _turn, value = reply
                if kind == "turn_failed":
                    raise value
                finished = isinstance(value, TurnDone)
                yield value
                if finished:
                    return
        finally:
            if not finished and not flags.cancel_sent:  # abandoned midway: stop the child
                child.send("cancel", turn)
            child.drop_inbox(turn)

    def close(self) -> None:
        self._closed = True  # a restart under way sees it and gives up
        loading = self._loading
        if loading is not None:
            loading.close()
        with self._restart_lock:
            self._child.close()

    def __enter__(self) -> ProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _get(box: queue.SimpleQueue, polling: bool) -> Any:
    """The next message, or None after a poll interval when cancel events need a look."""
    try:
        return box.get(timeout=_CANCEL_POLL if polling else None)
    except queue.Empty:
        return None


class _Flags:
    """A turn's cancel and answer-now events, each passed on to the child once."""

    def __init__(self, child: _Child, turn: int, cancel: threading.Event | None,
                 answer_now: threading.Event | None) -> None:
        self._child, self._turn = child, turn
        self._cancel, self._answer_now = cancel, answer_now
        self.cancel_sent = False
        self._answer_now_sent = False

    @property
    def watching(self) -> bool:
        return (self._cancel is not None and not self.cancel_sent) or \
            (self._answer_now is not None and not self._answer_now_sent)

    def forward(self) -> None:
        if not self.cancel_sent and self._cancel is not None and self._cancel.is_set():
            self.cancel_sent = self._child.send("cancel", self._turn) or True
        if not self._answer_now_sent and self._answer_now is not None \
                and self._answer_now.is_set():
            self._answer_now_sent = self._child.send("answer_now", self._turn) or True


class _Pending:
    """The requests in the child, by its id for each (the feed's thread adds, the run loop
    takes them away)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, SequenceRequest] = {}
        self._cancelled: set[int] = set()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._requests)

    def add(self, key: int, request: SequenceRequest) -> None:
        with self._lock:
            self._requests[key] = request

    def get(self, key: int, *, done: bool) -> SequenceRequest | None:
        with self._lock:
            if done:
                self._cancelled.discard(key)
                return self._requests.pop(key, None)
            return self._requests.get(key)

    def newly_cancelled(self) -> list[int]:
        """The requests whose cancel was set since the last look (a client that went away)."""
        with self._lock:
            fresh = [key for key, request in self._requests.items()
                     if key not in self._cancelled and request.cancel is not None
                     and request.cancel.is_set()]
            self._cancelled.update(fresh)
            return fresh


class ProcessDecoder:
    """serve's ParallelDecoder, in the child: requests from a RequestFeed go to it, events
    come back to the sink in this process. One per ProcessEngine at a time. A request's
    `answer_now` is not passed on (serve sets none)."""

    def __init__(self, engine: ProcessEngine, parallel: int, n_ctx_per_sequence: int,
                 threads: int | None = None) -> None:
        self.engine = engine
        self._child = engine.current_child()
        engine.call_on(self._child, "open_decoder", parallel, n_ctx_per_sequence, threads)

    def run(self, feed: RequestFeed, sink: EventSink,
            cancel: threading.Event | None = None) -> None:
        """Decode every request the feed gives until it is closed and they have finished;
        GenerationError (the child's last line) when the child ends first."""
        cancel = cancel or threading.Event()
        child = self._child
        box = child.inbox(_DECODER_INBOX)
        pending = _Pending()
        taker = threading.Thread(target=self._take, args=(feed, child, box, pending),
                                 name="localr1-feed", daemon=True)
        cancel_all_sent = False
        try:
            if not child.send("run"):
                gone = box.get()  # the reader puts the reason in every inbox
                raise GenerationError(gone.reason if isinstance(gone, _ChildGone)
                                      else "the model process has ended")
            taker.start()
            while True:
                reply = _get(box, bool(pending))
                if not cancel_all_sent and cancel.is_set():
                    cancel_all_sent = child.send("cancel_all") or True
                for key in pending.newly_cancelled():
                    child.send("cancel_request", key)
                if reply is None:
                    continue
                if isinstance(reply, _ChildGone):
                    raise GenerationError(reply.reason)
                kind, key, value = reply
                if kind == "run_done":
                    if value is not None:
                        raise GenerationError(value)
                    return
                if kind != "request_event":  # "queued": look at its cancel from now on
                    continue
                request = pending.get(key, done=isinstance(value, TurnDone))
                if request is not None:
                    sink(request.key, value)
        finally:
            child.drop_inbox(_DECODER_INBOX)
            feed.close()  # ends the taker, if it still waits

    def _take(self, feed: RequestFeed, child: _Child, box: queue.SimpleQueue,
              pending: _Pending) -> None:
        """Requests from the feed to the child as they come; the feed's end, too."""
        while True:
            request = feed.take(wait=True)
            if request is RequestFeed._CLOSED:
                child.send("close_feed")
                return
            key = self.engine.next_id()
            pending.add(key, request)
            if not child.send("request", key, request.prompt, request.params, request.seed):
                return  # gone: the run loop has heard it, and its caller fails what is open
            box.put(("queued", key, None))  # wakes the loop to watch this request's cancel

    def close(self) -> None:
        with contextlib.suppress(LocalR1Error):  # a child that is gone has nothing to free
            if self._child.gone is None:
                self.engine.call_on(self._child, "close_decoder")

    def __enter__(self) -> ProcessDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cancelled_before_start(seconds: float) -> TurnStats:
    """A turn stopped before the model could start it: nothing generated."""
    return TurnStats(finish_reason="cancelled", prompt_tokens=0, cached_prompt_tokens=0,
                     completion_tokens=0, reasoning_tokens=0, reasoning_truncated=False,
                     reasoning_budget_hit=False, dropped_messages=0, ttft_seconds=seconds,
                     tokens_per_second=0.0, thinking_seconds=None, total_seconds=seconds)
