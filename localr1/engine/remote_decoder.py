"""batch --parallel N against an endpoint: N requests in flight at once, one thread each,
with the parallel decoder's interface (`run(requests, sink, cancel)`) so the batch runner
treats both alike.

A request's events reach the sink only once it has finished, so a stream that breaks midway
is asked again from the start (with the engine's backoff) and the record holds one whole
answer; after the last try the sink gets `RequestFailed` instead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.engine.events import Event, GenerationParams
from localr1.engine.openai_wire import StreamBroken
from localr1.engine.remote_engine import RemoteEngine
from localr1.errors import LocalR1Error


@dataclass(frozen=True)
class RemoteRequest:
    key: Any
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    system: str | None = None
    seed: int | None = None  # None: params.seed (a random one when that is None too)


@dataclass(frozen=True)
class RequestFailed:
    """The sink's last word for a request that could not be answered: one line why."""

    message: str


RemoteSink = Callable[[Any, Event | RequestFailed], None]


class RemoteDecoder:
    """Runs requests `parallel` at a time through a RemoteEngine."""

    def __init__(self, engine: RemoteEngine, parallel: int) -> None:
        self.engine = engine
        self.parallel = parallel

    def __enter__(self) -> RemoteDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to free: each request closed its own connection."""

    def run(self, requests: Iterable[RemoteRequest], sink: RemoteSink,
            cancel: threading.Event | None = None) -> None:
        """Answer every request; `sink(key, event)` is called from one thread at a time, in
        completion order. `cancel` stops the requests in flight (their TurnDone says
        "cancelled") and starts no new one."""
        cancel = cancel or threading.Event()
        waiting: queue.SimpleQueue[RemoteRequest] = queue.SimpleQueue()
        for request in requests:
            waiting.put(request)
        sink_lock = threading.Lock()
        failures: list[BaseException] = []  # the first one is re-raised once all have stopped

        def deliver(key: Any, events: list[Event | RequestFailed]) -> None:
            with sink_lock:
                for event in events:
                    sink(key, event)

        def work() -> None:
            try:
                while not cancel.is_set():
                    try:
                        request = waiting.get_nowait()
                    except queue.Empty:
                        return
                    deliver(request.key, self._answer(request, cancel))
            except BaseException as exc:  # the sink's write or save failed (a full disk...)
                with sink_lock:
                    failures.append(exc)
                cancel.set()  # the others stop too: the batch ends with this error

        workers = [threading.Thread(target=work, daemon=True, name=f"localr1-endpoint-{n}")
                   for n in range(self.parallel)]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                worker.join()
        except BaseException:  # Ctrl+C: the requests in flight end "cancelled"
            cancel.set()
            raise
        if failures:
            raise failures[0]

    def _answer(self, request: RemoteRequest, cancel: threading.Event
                ) -> list[Event | RequestFailed]:
        params = replace(request.params, seed=request.seed) if request.seed is not None \
            else request.params
        policy = self.engine.policy
        for attempt in range(1, policy.tries + 1):
            try:
                return list(self.engine.stream_chat(request.messages, params,
                                                    system_prompt=request.system,
                                                    cancel=cancel))
            except StreamBroken as exc:
                if attempt == policy.tries:
                    return [RequestFailed(f"{exc} (after {policy.tries} tries)")]
                if cancel.wait(policy.delay(attempt)):
                    break
            except LocalR1Error as exc:
                return [RequestFailed(str(exc))]
        return []  # cancelled while waiting to ask again: no record, a rerun answers it
