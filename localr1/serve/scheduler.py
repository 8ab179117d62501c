"""The server's one decoder thread: it owns the model in memory and its ParallelDecoder.

HTTP handlers `submit` requests from worker threads; the decoder thread takes them as slots
free up (continuous batching: a request that arrives mid-decode joins at the next step, none
cancels another) and hands each event back to the handler's asyncio queue through
`loop.call_soon_threadsafe`.

One model is in memory at a time. A request for another installed model waits: the feed is
closed to new requests, the requests in flight finish, the decoder thread loads the wanted
model and the waiting requests go on with it. `allow_swap=False` (`--no-swap`) refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from localr1.engine.events import Event, TurnDone
from localr1.engine.llama_engine import Engine
from localr1.engine.model_process import ProcessDecoder, ProcessEngine, open_decoder
from localr1.engine.parallel_decoder import ParallelDecoder, RequestFeed, SequenceRequest
from localr1.errors import LocalR1Error
from localr1.models.choice import ChosenModel
from localr1.serve.api_error import ApiError
from localr1.serve.model_names import same_file

log = logging.getLogger("localr1.serve")


@dataclass(frozen=True)
class DecoderFailed:
    """The decoder stopped (a llama.cpp error) before this request finished."""

    message: str


@dataclass(eq=False)
class Ticket:
    """One request's way back from the decoder thread to its handler."""

    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def deliver(self, item: Event | DecoderFailed) -> None:  # from the decoder thread
        if self.loop.is_closed():  # the server stopped: nobody is listening
            return
        with contextlib.suppress(RuntimeError):  # it closed just now
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


# An Engine, or a ProcessEngine when RPC workers take part (model_process): a lost worker then
# fails the requests in flight like any llama.cpp error, and the model is loaded again.
ServedEngine = Engine | ProcessEngine
LoadEngine = Callable[[ChosenModel], ServedEngine]
MakeRequest = Callable[[ServedEngine], SequenceRequest]
Decoder = ParallelDecoder | ProcessDecoder


@dataclass(frozen=True)
class DecoderShape:
    parallel: int
    n_ctx_per_sequence: int
    threads: int


class Scheduler:
    def __init__(self, load: LoadEngine, first: ChosenModel, shape: DecoderShape, *,
                 allow_swap: bool = True) -> None:
        self._load = load
        self.shape = shape
        self.allow_swap = allow_swap
        self._cond = threading.Condition()
        self._target: ChosenModel | None = first  # being loaded; None: none (after a failure)
        self._current: ChosenModel | None = None
        self._engine: ServedEngine | None = None
        self._feed: RequestFeed | None = None
        self._accepting = False
        self._wanted: deque[ChosenModel] = deque()  # the models to load next, in order asked
        self._arrivals = 0  # numbers the submits, to serve each model's waiters in turn
        self._waiters: dict[int, ChosenModel] = {}  # submits waiting for their model
        # With a swap wanted, only the requests numbered below this still go to the model in
        # memory: the swap waits for them, and later ones wait for the swap (no ping-pong).
        self._cutoff: int | None = None
        self._preparing = 0  # submits between taking the engine and putting their request
        self._open: set[Ticket] = set()
        self._stopping = False
        self._cancel_all = threading.Event()
        self._loads = 0  # load attempts, for waiters to see a failure that came after them
        self._failure: tuple[ChosenModel, int, str] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="localr1-decoder", daemon=True)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the first model and start decoding; its load error is raised here."""
        self._thread.start()
        self._started.wait()
        with self._cond:
            if self._current is None and self._failure is not None:
                raise LocalR1Error(self._failure[2])

    def begin_stop(self) -> None:
        """Cancel every open request (each stream ends with its finish chunk), refuse new
        ones and load nothing more; the decoder thread then unloads the model."""
        with self._cond:
            self._stopping = True
            self._cancel_all.set()
            self._close_feed_when_idle()
            self._cond.notify_all()

    def stop(self) -> None:
        self.begin_stop()
        self._thread.join()

    def context_per_sequence(self, engine: ServedEngine) -> int:
        """Each request's context: --ctx, within what the model was trained for."""
        return min(self.shape.n_ctx_per_sequence,
                   engine.info.n_ctx_train or self.shape.n_ctx_per_sequence)

    @property
    def current(self) -> ChosenModel | None:
        """The model in memory, else the one being loaded."""
        with self._cond:
            return self._current or self._target

    @property
    def ready(self) -> bool:
        with self._cond:
            return self._accepting

    @property
    def in_flight(self) -> int:
        """Requests handed to the decoder and not finished (decoding or waiting for a slot)."""
        with self._cond:
            return len(self._open)

    @property
    def waiting(self) -> int:
        """Requests waiting for their model (a swap)."""
        with self._cond:
            return len(self._waiters)

    # ---- requests (from handler threads) -------------------------------------------------

    def submit(self, chosen: ChosenModel, make: MakeRequest) -> ServedEngine:
        """Wait until `chosen` is the model in memory (swapping if it must), build the request
        with its engine and hand it to the decoder. Returns that engine."""
        with self._cond:
            number, seen_loads = self._arrivals, self._loads
            self._arrivals += 1
            self._waiters[number] = chosen
            try:
                while not self._can_take(chosen, number):
                    self._check_waiting(chosen, number, seen_loads)
                    self._cond.wait()
                self._preparing += 1
                engine, feed = self._engine, self._feed
            finally:
                del self._waiters[number]
                self._close_feed_when_idle()  # it may have been the swap's last waiter
        try:
            request = make(engine)
            with self._cond:
                # The decoder may have stopped meanwhile (a llama.cpp error, shutdown): then
                # nobody would take the request from this feed.
                if self._feed is not feed or not self._accepting:
                    raise self._stopped_error()
                self._open.add(request.key)
                feed.put(request)
        finally:  # put or failed: a swap waiting for this request may go on
            with self._cond:
                self._preparing -= 1
                self._close_feed_when_idle()
                self._cond.notify_all()
        return engine

    def _stopped_error(self) -> ApiError:
        if self._stopping:
            return ApiError(503, "the server is shutting down", code="shutting_down")
        return ApiError(503, "the model stopped before this request started; try again",
                        code="generation_failed")

    def _can_take(self, chosen: ChosenModel, number: int) -> bool:
        return (self._accepting and self._current is not None
                and same_file(self._current.path, chosen.path)
                and (self._cutoff is None or number < self._cutoff))

    def _check_waiting(self, chosen: ChosenModel, number: int, seen_loads: int) -> None:
        """Under the lock: raise what this waiter must hear, or make sure its model comes."""
        if self._stopping:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        failure = self._failure
        if failure and failure[1] > seen_loads and same_file(failure[0].path, chosen.path):
            raise ApiError(503, f"cannot load {chosen.name}: {failure[2]}",
                           code="model_load_failed")
        if self._target is not None and same_file(self._target.path, chosen.path):
            return  # being loaded
        if self._current is not None and same_file(self._current.path, chosen.path) and \
                (self._cutoff is None or number < self._cutoff):
            return  # its turn on the model in memory comes
        if any(same_file(model.path, chosen.path) for model in self._wanted):
            return  # queued
        if not self.allow_swap:
            loaded = self._current or self._target
            name = loaded.name if loaded else "its first model"
            raise ApiError(400, f"this server runs {name} only (started with --no-swap); "
                                f"ask for it, or restart the server with -m {chosen.name}",
                           code="model_not_loaded", param="model")
        self._wanted.append(chosen)
        if self._cutoff is None:
            self._cutoff = self._arrivals
        self._close_feed_when_idle()
        self._cond.notify_all()  # a decoder thread with no model waits for this

    def _close_feed_when_idle(self) -> None:
        # Under the lock. Requests being prepared hold the feed open (theirs must go in), and
        # so do the waiters a swap still lets onto the model in memory.
        if not self._accepting or self._preparing:
            return
        if self._stopping or (self._wanted and not self._current_has_waiters()):
            self._accepting = False
            self._feed.close()

    def _current_has_waiters(self) -> bool:
        return any(number < self._cutoff and same_file(model.path, self._current.path)
                   for number, model in self._waiters.items())

    # ---- the decoder thread ----------------------------------------------------------------

    def _main(self) -> None:
        previous: ChosenModel | None = None
        while True:
            with self._cond:
                while self._target is None and not self._wanted and not self._stopping:
                    self._cond.wait()  # no model in memory: wait for a request for one
                if self._stopping:
                    self._started.set()
                    return
                if self._target is None:
                    self._target = self._wanted.popleft()
                target = self._target
            try:
                engine = self._load(target)
                try:
                    decoder = open_decoder(engine, self.shape.parallel,
                                           self.context_per_sequence(engine),
                                           self.shape.threads)
                except BaseException:
                    engine.close()
                    raise
            except LocalR1Error as exc:
                if not self._load_failed(target, str(exc), previous):
                    return
                continue
            self._serve(target, engine, decoder)
            previous = target

    def _load_failed(self, target: ChosenModel, message: str,
                     previous: ChosenModel | None) -> bool:
        """Tell the waiters, and choose what to load next: the next model asked for, else the
        previous one, else nothing until a request asks (False: stop the thread)."""
        with self._cond:
            self._loads += 1
            self._failure = (target, self._loads, message)
            if self._started.is_set():  # the first model's failure is start()'s to raise
                log.warning("localr1 serve: cannot load %s: %s", target.name, message)
            self._cond.notify_all()
            if self._stopping or not self._started.is_set():  # the first model: start() says
                self._started.set()
                return False
            if self._wanted:
                self._target = self._wanted.popleft()
            elif previous is not None and not same_file(previous.path, target.path):
                self._target = previous
            else:  # nothing that loads: retrying would spin
                self._target = None
            return True

    def _serve(self, target: ChosenModel, engine: ServedEngine, decoder: Decoder) -> None:
        feed = RequestFeed()
        with self._cond:
            self._loads += 1
            self._current, self._engine, self._feed = target, engine, feed
            self._target = None
            self._accepting = True
            self._wanted = deque(m for m in self._wanted if not same_file(m.path, target.path))
            # Everyone waiting now gets this model before the next swap.
            self._cutoff = self._arrivals if self._wanted else None
            self._close_feed_when_idle()
            self._cond.notify_all()
        self._started.set()
        failure, failed = "the server is shutting down", False
        try:
            decoder.run(feed, self._sink, self._cancel_all)
        except Exception as exc:  # llama.cpp failed mid-decode: every open request hears it
            failure, failed = str(exc), True
        finally:
            with self._cond:
                self._accepting = False
                self._current = None
                # The next model asked for; else the same one again (after a failed decode).
                self._target = self._wanted.popleft() if self._wanted else target
                if failed:  # the operator's terminal hears it too (a lost RPC worker)
                    then = "stopping" if self._stopping else f"loading {self._target.name}"
                    log.warning("localr1 serve: %s; the requests in flight failed; %s",
                                failure, then)
                while self._preparing:  # their submits see the feed closed and do not put
                    self._cond.wait()
                # Normally none: the feed was drained. After a failure or a shutdown, the
                # requests decoding or still in the feed.
                unfinished, self._open = self._open, set()
                self._engine = None
            for ticket in unfinished:
                ticket.deliver(DecoderFailed(failure))
            decoder.close()
            engine.close()

    def _sink(self, ticket: Ticket, event: Event) -> None:
        if isinstance(event, TurnDone):
            with self._cond:
                self._open.discard(ticket)
        ticket.deliver(event)
