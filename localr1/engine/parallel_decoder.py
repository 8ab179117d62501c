"""Several prompts decoded together in one llama.cpp context, like llama-server's slots.

Each request gets a sequence id, its own sampler chain and its own reasoning splitter; every
step puts one token per generating sequence (plus prompt chunks of newly started ones) into one
`llama_batch`, so a memory-bound CPU reads the weights once for N tokens instead of once per
token. The KV cache is split evenly between the sequences (`kv_unified = false`).

Requests come from an iterable (batch: the decoder returns when it is exhausted) or a
`RequestFeed` that other threads put requests into while the decoder runs (serve: a request
that arrives mid-decode takes the next free slot). Each request may carry its own cancel event
(a client that went away): its slot is freed at the next step.

An `answer_grammar` (JSON output) joins a slot's sampler chain when its think block closes, so
the model reasons freely and only the answer is constrained.

This uses llama-cpp-python's low-level API (the high-level `Llama` decodes one sequence) on
the model an `Engine` already loaded; the Engine's own context stays free for chat.
"""

from __future__ import annotations

import codecs
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from localr1.engine.events import Event, FinishReason, GenerationParams, TurnDone
from localr1.engine.llama_engine import THINK_CLOSE, Engine
from localr1.engine.prompting import PreparedPrompt
from localr1.engine.reasoning import ThinkSplitter
from localr1.engine.turn_account import TurnAccount, max_new_tokens
from localr1.errors import GenerationError, InsufficientMemoryError, LocalR1Error
from localr1.models import hardware
from localr1.sizes import format_bytes


@dataclass(frozen=True)
class SequenceRequest:
    key: Any  # the caller's id for this request, echoed in callbacks
    prompt: PreparedPrompt  # from Engine.prepare_prompt with n_ctx = n_ctx_per_sequence
    params: GenerationParams
    seed: int | None = None  # None: params.seed or a random one
    cancel: threading.Event | None = None  # set: this request's slot is freed ("cancelled")


EventSink = Callable[[Any, Event], None]


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


class GrammarError(LocalR1Error):
    """llama.cpp refused an answer grammar."""


@dataclass
class _Slot:
    """One sequence being decoded."""

    seq_id: int
    request: SequenceRequest
    sampler: Any
    pending: list[int]  # tokens still to feed (prompt chunks, injected tokens)
    account: TurnAccount  # splitter, counts, times: the same bookkeeping as Engine's turns
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    n_past: int = 0
    logits_index: int = -1  # where this slot's logits are in the current batch
    grammar_pending: bool = False  # an answer grammar waits for the think block to close


class ParallelDecoder:
    def __init__(self, engine: Engine, n_parallel: int, n_ctx_per_sequence: int,
                 threads: int, n_batch: int = 512) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.engine = engine
        self.n_parallel = n_parallel
        self.n_ctx_per_sequence = n_ctx_per_sequence
        self.n_batch = max(n_batch, n_parallel)
        _check_kv_memory(engine, n_parallel, n_ctx_per_sequence)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_per_sequence * n_parallel
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = n_parallel
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False  # each sequence gets its own n_ctx_per_sequence cells
        self._ctx = llama_cpp.llama_init_from_model(engine.model_handle, params)
        if not self._ctx:
            raise GenerationError(f"llama.cpp could not create a context for {n_parallel} "
                                  f"sequences of {n_ctx_per_sequence} tokens")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._close_tokens = engine.think_close_tokens
        # What each sequence's KV cache holds: a new request reuses the common prefix (chat
        # templates start every prompt the same way), as llama-server's slots do.
        self._cached: dict[int, list[int]] = {}

    def close(self) -> None:
        if self._ctx:
            self._llama_cpp.llama_batch_free(self._batch)
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
                self._llama_cpp.llama_sampler_free(slot.sampler)

    def _run(self, feed: RequestFeed | _IterableFeed, free_ids: deque[int],
             slots: dict[int, _Slot], sink: EventSink, cancel: threading.Event) -> None:
        exhausted = False
        while True:
            while free_ids and not exhausted:
                request = feed.take(wait=not slots)  # idle: wait for the next request
                if request is RequestFeed._CLOSED:
                    exhausted = True
                    break
                if request is None:
                    break
                slot = self._start(free_ids.popleft(), request)
                if request.cancel is not None and request.cancel.is_set():
                    self._finish(slot, "cancelled", sink)
                    free_ids.append(slot.seq_id)
                    continue
                if slot.account.max_new <= 0:
                    self._finish(slot, "length", sink)
                    free_ids.append(slot.seq_id)
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
            self._decode_step(slots)
            for slot in list(slots.values()):
                if slot.logits_index >= 0:
                    reason = self._sample(slot, sink)
                    if reason:
                        self._release(slot, reason, sink, slots, free_ids)

    def _start(self, seq_id: int, request: SequenceRequest) -> _Slot:
        llama_cpp = self._llama_cpp
        params = request.params
        seed = request.seed if request.seed is not None else params.seed
        if seed is None:
            seed = random.getrandbits(31)
        prompt = request.prompt.tokens
        max_new = max_new_tokens(self.n_ctx_per_sequence, len(prompt), params.max_tokens)
        cached = self._cached.setdefault(seq_id, [])
        reuse = 0
        for a, b in zip(cached, prompt[:-1], strict=False):  # feed at least one token
            if a != b:
                break
            reuse += 1
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, reuse, -1)
        del cached[reuse:]
        account = TurnAccount(
            prompt_tokens=len(prompt), cached_prompt_tokens=reuse,
            splitter=ThinkSplitter(start_in_reasoning=request.prompt.start_in_reasoning),
            max_new=max_new, started=time.perf_counter())
        slot = _Slot(seq_id=seq_id, request=request, sampler=self._sampler(params, seed),
                     pending=list(prompt[reuse:]), account=account, n_past=reuse)
        if params.answer_grammar is not None:
            # An R1 model thinks first (its prompt opened the block, or it opens it itself):
            # the grammar waits for </think>. Other models answer from their first token.
            slot.grammar_pending = True
            if not (account.splitter.in_reasoning or self.engine.info.is_r1):
                self._start_grammar(slot)
        if params.reasoning_budget == 0 and account.splitter.in_reasoning:
            self._inject_close(slot, None)
        return slot

    def _start_grammar(self, slot: _Slot) -> None:
        """Put the answer grammar into the slot's chain after the penalties (index 0), before
        the truncation and the final pick: the samplers after it keep their state (the
        dist sampler's random stream), so a seeded turn stays reproducible."""
        llama_cpp = self._llama_cpp
        slot.grammar_pending = False
        grammar = new_grammar_sampler(self.engine, slot.request.params.answer_grammar or "")
        chain = slot.sampler
        rest = [llama_cpp.llama_sampler_chain_remove(chain, 1)
                for _ in range(llama_cpp.llama_sampler_chain_n(chain) - 1)]
        llama_cpp.llama_sampler_chain_add(chain, grammar)
        for sampler in rest:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

    def _sampler(self, params: GenerationParams, seed: int):
        # The same chain, in the same order, as llama-cpp-python's Llama.generate.
        llama_cpp = self._llama_cpp
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        add(chain, llama_cpp.llama_sampler_init_penalties(self.engine.n_vocab, 64,
                                                          params.repeat_penalty, 0.0, 0.0))
        if params.temperature == 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _decode_step(self, slots: dict[int, _Slot]) -> None:
        """One llama_decode over every slot's next tokens (prompt chunks fill what is left)."""
        batch = self._batch
        n = 0
        for slot in slots.values():
            slot.logits_index = -1
        # Generating slots first (one token each), so a long prompt never starves them.
        for slot in sorted(slots.values(), key=lambda s: len(s.pending)):
            take = min(len(slot.pending), self.n_batch - n)
            if take <= 0:
                continue
            self._cached[slot.seq_id].extend(slot.pending[:take])
            for token in slot.pending[:take]:
                batch.token[n] = token
                batch.pos[n] = slot.n_past
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq_id
                batch.logits[n] = 0
                slot.n_past += 1
                n += 1
            del slot.pending[:take]
            if not slot.pending:  # fully fed: its next token is sampled from this step
                batch.logits[n - 1] = 1
                slot.logits_index = n - 1
        batch.n_tokens = n
        result = self._llama_cpp.llama_decode(self._ctx, batch)
        if result != 0:
            raise GenerationError(f"llama.cpp failed while generating (llama_decode {result})")

    def _sample(self, slot: _Slot, sink: EventSink) -> FinishReason | None:
        llama_cpp = self._llama_cpp
        account = slot.account
        token = llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, slot.logits_index)
        now = time.perf_counter()
        if account.first_token_at is None:
            account.first_token_at = now
        if self.engine.is_end_of_generation(token):
            return "stop"
        account.completion_tokens += 1
        account.last_token_at = now
        text = slot.decoder.decode(self.engine.detokenize([token]))
        self._emit(slot, account.feed(text, now), sink)
        slot.pending.append(token)
        self._grammar_after_think(slot)
        if account.is_looping(token):
            return "repetition"
        if account.completion_tokens >= account.max_new:
            return "length"
        budget = slot.request.params.reasoning_budget
        if 0 <= budget <= account.reasoning_tokens and account.splitter.in_reasoning:
            self._inject_close(slot, sink)
            if account.completion_tokens >= account.max_new:  # </think> filled the context
                return "length"
        return None

    def _inject_close(self, slot: _Slot, sink: EventSink | None) -> None:
        """--reasoning-budget: end the think block and let the model answer."""
        account = slot.account
        slot.pending.extend(self._close_tokens)
        account.max_new -= len(self._close_tokens)  # they take room like generated tokens
        account.reasoning_budget_hit = True
        # Consumed either way: feeding the splitter is what ends the reasoning.
        events = list(account.feed(THINK_CLOSE, time.perf_counter(), generated=False))
        self._grammar_after_think(slot)
        if sink is not None:
            self._emit(slot, events, sink)

    def _grammar_after_think(self, slot: _Slot) -> None:
        splitter = slot.account.splitter
        if slot.grammar_pending and splitter.saw_reasoning and not splitter.in_reasoning:
            self._start_grammar(slot)

    def _emit(self, slot: _Slot, events: Iterable[Event], sink: EventSink) -> None:
        for event in events:
            sink(slot.request.key, event)

    def _release(self, slot: _Slot, reason: FinishReason, sink: EventSink,
                 slots: dict[int, _Slot], free_ids: deque[int]) -> None:
        del slots[slot.seq_id]
        free_ids.append(slot.seq_id)  # its KV cache stays, for the next request's prefix
        self._finish(slot, reason, sink)

    def _finish(self, slot: _Slot, reason: FinishReason, sink: EventSink) -> None:
        account = slot.account
        self._emit(slot, account.finish(slot.decoder.decode(b"", final=True)), sink)
        self._llama_cpp.llama_sampler_free(slot.sampler)
        account.finish_reason = reason
        sink(slot.request.key, TurnDone(account.stats(slot.request.prompt.dropped_messages)))


def new_grammar_sampler(engine: Engine, grammar: str):
    """A llama.cpp grammar sampler for `grammar` (GBNF, root rule "root"); GrammarError when
    llama.cpp cannot parse it. The caller owns (frees) it."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(engine.model_handle)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise GrammarError("llama.cpp could not parse the answer grammar")
    return sampler


def check_grammar(engine: Engine, grammar: str) -> None:
    """GrammarError now, from any thread, for a grammar a slot could not use later."""
    import llama_cpp

    llama_cpp.llama_sampler_free(new_grammar_sampler(engine, grammar))


def _check_kv_memory(engine: Engine, n_parallel: int, n_ctx_per_sequence: int) -> None:
    """Refuse, in one line, a KV cache of n_parallel x n_ctx that RAM cannot hold (llama.cpp
    would allocate it and swap, or be killed). The model's weights are loaded already."""
    n_ctx = n_parallel * n_ctx_per_sequence
    estimate = hardware.estimate_memory(engine.header, n_ctx)
    total_layers = estimate.n_layers + 1
    on_cpu_share = 1.0 - min(engine.info.gpu_layers, total_layers) / total_layers
    needed = int(estimate.kv_cache_bytes * on_cpu_share) + estimate.overhead_bytes
    available = hardware.memory_info().available_bytes
    if needed > available:
        raise InsufficientMemoryError(
            f"{n_parallel} sequences of {n_ctx_per_sequence} tokens need about "
            f"{format_bytes(needed)} of RAM for their KV cache but only "
            f"{format_bytes(available)} is free; use a smaller --ctx or --parallel")
