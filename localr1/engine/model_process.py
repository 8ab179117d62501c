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
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.engine.events import Event, GenerationParams, ModelInfo, TurnDone, TurnStats
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.model_child import (
    DECODER_INBOX,
    Child,
    LoadStopped,
    next_message,
)
from localr1.engine.parallel_decoder import (
    EventSink,
    ParallelDecoder,
    RequestFeed,
    SequenceRequest,
)
from localr1.engine.prompting import PreparedPrompt
from localr1.errors import GenerationError, LocalR1Error


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


class ProcessEngine:
    """A model in a child process. Thread-safe like Engine: turns may run from several
    threads; a new child is started when the previous one ended."""

    def __init__(self, config: EngineConfig, child: Child) -> None:
        self.config = config
        self._child = child
        self._loading: Child | None = None  # a restart under way (close() kills it)
        self._ids = itertools.count()
        self._restart_lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, config: EngineConfig) -> ProcessEngine:
        """Load `config` in a new child; its load error (one line) is raised here."""
        child = Child(config)
        child.wait_ready()
        return cls(config, child)

    @property
    def info(self) -> ModelInfo:
        return self._child.info

    def child(self, stop: Callable[[], bool] = lambda: False) -> Child:
        """The live child, starting a new one when the last one ended (a chat turn: the TUI
        goes on after a lost worker). LoadStopped when `stop()` or close() ends the wait."""
        with self._restart_lock:
            if self._closed:
                raise GenerationError("the model was closed")
            if self._child.gone is not None:
                self._child.close()
                if stop():
                    raise LoadStopped
                self._loading = fresh = Child(self.config)
                try:
                    fresh.wait_ready(lambda: self._closed or stop())
                finally:
                    self._loading = None
                self._child = fresh
            return self._child

    def current_child(self) -> Child:
        """The child now, live or ended: never a new one."""
        return self._child

    def next_id(self) -> int:
        return next(self._ids)

    def call(self, name: str, *args: Any) -> Any:
        """Run one of model_host's calls in the child and return its value; GenerationError
        when the child has ended. Never a restart: serve's scheduler reloads the model itself
        (a request's thread must not)."""
        return self.call_on(self._child, name, *args)

    def call_on(self, child: Child, name: str, *args: Any) -> Any:
        key = self.next_id()
        box = child.inbox(key)
        try:
            child.send("call", key, name, args)
            kind, _key, value = next_message(box)
        finally:
            child.drop_inbox(key)
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
        except LoadStopped:
            yield TurnDone(cancelled_before_start(time.perf_counter() - started))
            return
        turn = self.next_id()
        box = child.inbox(turn)
        flags = _Flags(child, turn, cancel, answer_now)
        finished = False
        try:
            child.send("chat", turn, list(history), params, system_prompt)
            while True:
                reply = next_message(box, flags.watching)
                flags.forward()
                if reply is None:
                    continue
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


class _Flags:
    """A turn's cancel and answer-now events, each passed on to the child once."""

    def __init__(self, child: Child, turn: int, cancel: threading.Event | None,
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
        box = child.inbox(DECODER_INBOX)
        pending = _Pending()
        taker = threading.Thread(target=self._take, args=(feed, child, box, pending),
                                 name="localr1-feed", daemon=True)
        cancel_all_sent = False
        try:
            if not child.send("run"):
                next_message(box)  # raises: the reader puts the child's end in every inbox
            taker.start()
            while True:
                reply = next_message(box, bool(pending))
                if not cancel_all_sent and cancel.is_set():
                    cancel_all_sent = child.send("cancel_all") or True
                for key in pending.newly_cancelled():
                    child.send("cancel_request", key)
                if reply is None:
                    continue
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
            child.drop_inbox(DECODER_INBOX)
            feed.close()  # ends the taker, if it still waits

    def _take(self, feed: RequestFeed, child: Child, box: queue.SimpleQueue,
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
