"""Several prompts decoded together in one llama.cpp context, like llama-server's slots.

Each request gets a sequence id, its own sampler chain and its own reasoning splitter; every
step of the shared DecodeLoop puts each generating sequence's next tokens (plus prompt chunks of
newly started ones, and drafted tokens with --draft) into one `llama_batch`, so a memory-bound
CPU reads the weights once for N tokens instead of once per token. The KV cache is split evenly
between the sequences (`kv_unified = false`).

Requests come from an iterable (batch: the decoder returns when it is exhausted) or a
`RequestFeed` that other threads put requests into while the decoder runs (serve: a request
that arrives mid-decode takes the next free slot). Each request may carry its own cancel event
(a client that went away): its slot is freed at the next step.

It decodes on its own llama_context over the model an `Engine` already loaded; the Engine's
context stays free for chat.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable

from localr1.engine.decode_loop import (
    DecodeLoop,
    EventSink,
    GrammarError,
    SequenceRequest,
    _Slot,
    check_grammar,
    new_grammar_sampler,
)
from localr1.engine.llama_engine import Engine
from localr1.errors import GenerationError, InsufficientMemoryError
from localr1.models import hardware
from localr1.sizes import format_bytes

__all__ = ["EventSink", "GrammarError", "ParallelDecoder", "RequestFeed", "SequenceRequest",
           "check_grammar", "new_grammar_sampler"]


class RequestFeed:
    """Requests put from other threads while the decoder runs; `close` ends `run` once every
    request taken has finished."""

    _CLOSED = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, request: SequenceRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._CLOSED)

    def take(self, wait: bool) -> SequenceRequest | None | object:
        """The next request; None when none is waiting (and not `wait`); _CLOSED at the end."""
        try:
            return self._queue.get(block=wait)
        except queue.Empty:
            return None


class _IterableFeed:
    """An iterable of requests as a feed: it blocks on the iterator and ends with it."""

    def __init__(self, requests: Iterable[SequenceRequest]) -> None:
        self._requests = iter(requests)

    def take(self, wait: bool) -> SequenceRequest | object:
        return next(self._requests, RequestFeed._CLOSED)


class ParallelDecoder:
    def __init__(self, engine: Engine, n_parallel: int, n_ctx_per_sequence: int,
                 threads: int | None = None, n_batch: int = 512) -> None:
        """`threads` None: the engine's (measured at load, then adapted by the loop)."""
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.engine = engine
        self.n_parallel = n_parallel
        self.n_ctx_per_sequence = n_ctx_per_sequence
        self.n_batch = max(n_batch, n_parallel)
        _check_kv_memory(engine, n_parallel, n_ctx_per_sequence)
        threads = threads or engine.info.threads
        self._ctx = engine.new_context(engine.model_handle, n_parallel, n_ctx_per_sequence,
                                       self.n_batch, threads)
        if not self._ctx:
            raise GenerationError(f"llama.cpp could not create a context for {n_parallel} "
                                  f"sequences of {n_ctx_per_sequence} tokens")
        try:
            self._loop = DecodeLoop(engine, self._ctx, n_ctx_per_sequence, self.n_batch,
                                    **engine.loop_options(n_parallel, n_ctx_per_sequence,
                                                          threads))
        except BaseException:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
            raise

    def close(self) -> None:
        if self._ctx:
            self._loop.close()
            self._llama_cpp.llama_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> ParallelDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the decode loop -----------------------------------------------------------------

    def run(self, requests: Iterable[SequenceRequest] | RequestFeed, sink: EventSink,
            cancel: threading.Event | None = None) -> None:
        """Decode every request; `sink(key, event)` gets each one's events, ending in TurnDone.

        Requests are started as slots free up (continuous batching), so the order of completion
        follows length, not input order. `cancel` stops every request and starts no new one.
        """
        cancel = cancel or threading.Event()
        feed = requests if isinstance(requests, RequestFeed) else _IterableFeed(requests)
        free_ids = deque(range(self.n_parallel))
        slots: dict[int, _Slot] = {}
        try:
            self._run(feed, free_ids, slots, sink, cancel)
        finally:  # after a failed decode: the samplers of the sequences still in flight
            for slot in slots.values():
                self._loop.discard(slot)

    def _run(self, feed: RequestFeed | _IterableFeed, free_ids: deque[int],
             slots: dict[int, _Slot], sink: EventSink, cancel: threading.Event) -> None:
        loop = self._loop
        exhausted = False
        while True:
            while free_ids and not exhausted:
                request = feed.take(wait=not slots)  # idle: wait for the next request
                if request is RequestFeed._CLOSED:
                    exhausted = True
                    break
                if request is None:
                    break
                slot = loop.start(free_ids.popleft(), request)
                if request.cancel is not None and request.cancel.is_set():
                    self._end(slot, "cancelled", sink, free_ids)
                    continue
                if slot.account.max_new <= 0:
                    self._end(slot, "length", sink, free_ids)
                    continue
                slots[slot.seq_id] = slot
            if not slots:
                if exhausted or cancel.is_set():
                    return
                continue
            if cancel.is_set():
                exhausted = True  # start nothing new
                for slot in list(slots.values()):
                    self._release(slot, "cancelled", sink, slots, free_ids)
                continue
            for slot in list(slots.values()):  # clients that went away free their slots
                if slot.request.cancel is not None and slot.request.cancel.is_set():
                    self._release(slot, "cancelled", sink, slots, free_ids)
            if not slots:
                continue
            for slot in loop.step(slots.values(), sink):
                self._release(slot, slot.done or "stop", sink, slots, free_ids)

    def _release(self, slot: _Slot, reason, sink: EventSink, slots: dict[int, _Slot],
                 free_ids: deque[int]) -> None:
        del slots[slot.seq_id]
        self._end(slot, reason, sink, free_ids)

    def _end(self, slot: _Slot, reason, sink: EventSink, free_ids: deque[int]) -> None:
        free_ids.append(slot.seq_id)  # its KV cache stays, for the next request's prefix
        self._loop.finish(slot, reason, sink)


def _check_kv_memory(engine: Engine, n_parallel: int, n_ctx_per_sequence: int) -> None:
    """Refuse, in one line, a KV cache of n_parallel x n_ctx that RAM cannot hold (llama.cpp
    would allocate it and swap, or be killed). The model's weights are loaded already."""
    n_ctx = n_parallel * n_ctx_per_sequence
    kv_type = engine.info.kv_type
    estimate = hardware.estimate_memory(engine.header, n_ctx, kv_type)
    kv_bytes = estimate.kv_cache_bytes
    if engine.draft_header is not None:  # the draft keeps a KV cache of its own per sequence
        kv_bytes += hardware.estimate_memory(engine.draft_header, n_ctx, kv_type).kv_cache_bytes
    total_layers = estimate.n_layers + 1
    on_cpu_share = 1.0 - min(engine.info.gpu_layers, total_layers) / total_layers
    needed = int(kv_bytes * on_cpu_share) + estimate.overhead_bytes
    available = hardware.memory_info().available_bytes
    if needed > available:
        raise InsufficientMemoryError(
            f"{n_parallel} sequences of {n_ctx_per_sequence} tokens need about "
            f"{format_bytes(needed)} of RAM for their KV cache but only "
            f"{format_bytes(available)} is free; use a smaller --ctx or --parallel")
