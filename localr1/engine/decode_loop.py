"""The one native decode loop: N sequences in one llama_context, llama.cpp's sampler chains,
speculative drafting, and the turn bookkeeping every front end relies on.

Chat and `run` drive it with one sequence on the Engine's own context; `batch` and `serve` with
N sequences through ParallelDecoder. Each `step` is one `llama_decode` over every sequence's
next tokens (prompt chunks, the last sampled token, injected `</think>` tokens, drafted
tokens), with logits only where a token is sampled.

Speculative decoding follows llama.cpp's scheme (common_sampler_sample_and_accept_n): the
drafter proposes tokens, the model scores them all in the same step, and the loop samples the
model's own token at each position with the sequence's sampler chain, keeping drafted tokens
while they equal the sampled ones. Every token that comes out is sampled from the model's
distribution, by the same chain and random stream as without a draft: at temperature 0 the
output is token for token the undrafted one (as far as llama.cpp's batched kernels round like its
one-token ones: see llama_engine._flash_attn_for), and a seeded turn makes the same draws.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from localr1.engine import fast_sampler, rpc_watchdog
from localr1.engine.events import Event, FinishReason, GenerationParams, TurnDone
from localr1.engine.prompting import PreparedPrompt
from localr1.engine.reasoning import ThinkSplitter
from localr1.engine.turn_account import TurnAccount, max_new_tokens
from localr1.errors import GenerationError, LocalR1Error

if TYPE_CHECKING:
    from localr1.engine.llama_engine import Engine

# What llama.cpp's --reasoning-budget injects to end a think block early.
THINK_CLOSE = "\n</think>\n\n"


@dataclass(frozen=True)
class SequenceRequest:
    key: Any  # the caller's id for this request, echoed in callbacks
    prompt: PreparedPrompt  # from Engine.prepare_prompt with n_ctx = n_ctx_per_sequence
    params: GenerationParams
    seed: int | None = None  # None: params.seed or a random one
    cancel: threading.Event | None = None  # set: this request's slot is freed ("cancelled")
    answer_now: threading.Event | None = None  # set while thinking: close the think block now


EventSink = Callable[[Any, Event], None]


class GrammarError(LocalR1Error):
    """llama.cpp refused an answer grammar."""


class Drafter(Protocol):
    """Proposes the tokens likely to follow a sequence (speculative decoding).

    The loop keeps each sequence's view in step: `reset` when a request starts on it (the
    first `keep` tokens of its context stay), `propose` with the whole context so far (only
    the tokens past the drafter's view are new), `truncate` when the context was cut back."""

    def reset(self, seq_id: int, keep: int) -> None: ...

    def propose(self, seq_id: int, context: list[int], n_max: int) -> list[int]: ...

    def truncate(self, seq_id: int, n: int) -> None: ...

    def set_threads(self, threads: int) -> None: ...

    def close(self) -> None: ...


class ThreadCheck(Protocol):
    def check(self, now: float) -> int | None: ...


@dataclass
class _Slot:
    """One sequence being decoded."""

    seq_id: int
    request: SequenceRequest
    sampler: Any  # llama.cpp's chain: penalties, grammars
    fast: fast_sampler.FastSampler | None  # the same rules without the chain, when they apply
    pending: list[int]  # tokens still to feed (prompt chunks, the sampled token, injected ones)
    account: TurnAccount  # splitter, counts, times: the bookkeeping of the turn
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    n_past: int = 0
    logits: list[int] = field(default_factory=list)  # batch rows sampled: last fed, drafts
    draft: list[int] = field(default_factory=list)  # drafted tokens fed in this step
    draft_len: int = 0  # the next draft's length (adapted to how many were accepted)
    drafted: int = 0
    accepted: int = 0
    grammar_pending: bool = False  # an answer grammar waits for the think block to close
    done: FinishReason | None = None


class DecodeLoop:
    """Decoding on one llama_context for up to `n_seq` sequences of `n_ctx_per_sequence`."""

    def __init__(self, engine: Engine, ctx: Any, n_ctx_per_sequence: int, n_batch: int, *,
                 drafter: Drafter | None = None, draft_max: int = 16, draft_min: int = 0,
                 threads: ThreadCheck | None = None) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.engine = engine
        self._ctx = ctx
        self.n_ctx_per_sequence = n_ctx_per_sequence
        self.n_batch = n_batch
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._close_tokens = engine.think_close_tokens
        self._drafter = drafter
        self._draft_max = draft_max
        self._draft_min = draft_min
        self._threads = threads
        self._n = 0  # tokens in the batch being filled
        # What each sequence's KV cache holds: a new request reuses the common prefix (chat
        # templates start every prompt the same way), as llama-server's slots do.
        self.cached: dict[int, list[int]] = {}

    def close(self) -> None:
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None

    # ---- starting and ending a sequence --------------------------------------------------

    def start(self, seq_id: int, request: SequenceRequest) -> _Slot:
        llama_cpp = self._llama_cpp
        params = request.params
        seed = request.seed if request.seed is not None else params.seed
        if seed is None:
            seed = random.getrandbits(31)
        prompt = request.prompt.tokens
        max_new = max_new_tokens(self.n_ctx_per_sequence, len(prompt), params.max_tokens)
        cached = self.cached.setdefault(seq_id, [])
        reuse = 0
        for a, b in zip(cached, prompt[:-1], strict=False):  # feed at least one token
            if a != b:
                break
            reuse += 1
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, reuse, -1)
        del cached[reuse:]
        if self._drafter is not None:
            self._drafter.reset(seq_id, reuse)
        account = TurnAccount(
            prompt_tokens=len(prompt), cached_prompt_tokens=reuse,
            splitter=ThinkSplitter(start_in_reasoning=request.prompt.start_in_reasoning),
            max_new=max_new, started=time.perf_counter())
        fast = fast_sampler.FastSampler(params, seed, self.engine.n_vocab) \
            if fast_sampler.applies(params) else None
        slot = _Slot(seq_id=seq_id, request=request, sampler=self._sampler(params, seed),
                     fast=fast, pending=list(prompt[reuse:]), account=account, n_past=reuse,
                     draft_len=max(self._draft_min, min(self._draft_max, 8)))
        if params.answer_grammar is not None:
            # An R1 model thinks first (its prompt opened the block, or it opens it itself):
            # the grammar waits for </think>. Other models answer from their first token.
            slot.grammar_pending = True
            if not (account.splitter.in_reasoning or self.engine.info.is_r1):
                try:
                    self._start_grammar(slot)
                except BaseException:
                    self.discard(slot)
                    raise
        if account.splitter.in_reasoning:
            if params.reasoning_budget == 0:
                self._inject_close(slot, None)
            elif request.answer_now is not None and request.answer_now.is_set():
                self._inject_close(slot, None, early=True)
        return slot

    def finish(self, slot: _Slot, reason: FinishReason, sink: EventSink) -> None:
        account = slot.account
        self._emit(slot, account.finish(slot.decoder.decode(b"", final=True)), sink)
        self._llama_cpp.llama_sampler_free(slot.sampler)
        slot.sampler = None
        account.finish_reason = reason
        stats = account.stats(slot.request.prompt.dropped_messages)
        if slot.drafted:
            stats = replace(stats, draft_tokens=slot.drafted, draft_accepted=slot.accepted)
        sink(slot.request.key, TurnDone(stats))

    def discard(self, slot: _Slot) -> None:
        """Free a slot's sampler without a TurnDone (after a failed decode)."""
        if slot.sampler is not None:
            self._llama_cpp.llama_sampler_free(slot.sampler)
            slot.sampler = None

    # ---- one step ------------------------------------------------------------------------

    def step(self, slots: Iterable[_Slot], sink: EventSink) -> list[_Slot]:
        """One llama_decode over every slot's next tokens, then sampling; returns the slots
        whose turn ended (their `done` says why; the caller calls `finish`)."""
        slots = list(slots)
        if self._threads is not None:
            threads = self._threads.check(time.perf_counter())
            if threads:
                self._llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
                if self._drafter is not None:
                    self._drafter.set_threads(threads)
        ended = []
        for slot in slots:
            self._check_answer_now(slot, sink)
            if slot.done:
                ended.append(slot)
        live = [slot for slot in slots if not slot.done]
        if not live:
            return ended
        try:
            self._fill_batch(live)
            with rpc_watchdog.decoding(self._n):  # a worker that stops answering ends it
                result = self._llama_cpp.llama_decode(self._ctx, self._batch)
            if result != 0:
                raise GenerationError(
                    f"llama.cpp failed while generating (llama_decode {result})")
        except BaseException:
            self._forget(live)
            raise
        for slot in live:
            if slot.logits:
                slot.done = self._sample(slot, sink)
                if slot.done:
                    ended.append(slot)
        return ended

    def _forget(self, slots: list[_Slot]) -> None:
        """After a failed decode nothing says what the KV cache holds: empty it, so the next
        request on these sequences feeds its whole prompt again."""
        for slot in slots:
            self.cached[slot.seq_id].clear()
            self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, 0, -1)
            if self._drafter is not None:
                self._drafter.reset(slot.seq_id, 0)

    def _check_answer_now(self, slot: _Slot, sink: EventSink) -> None:
        """The user asked for the answer while the model thinks: close the think block."""
        request = slot.request
        if request.answer_now is None or not request.answer_now.is_set():
            return
        if slot.account.splitter.in_reasoning and not slot.account.answered_early:
            self._inject_close(slot, sink, early=True)
            if slot.account.completion_tokens >= slot.account.max_new:
                slot.done = "length"

    def _fill_batch(self, slots: list[_Slot]) -> None:
        """Every slot's pending tokens first (generating slots before prompt chunks, so a long
        prompt never starves them), then drafts in the room left, shared evenly, so drafts
        never crowd out another sequence's token."""
        self._n = 0
        fed = []
        for slot in sorted(slots, key=lambda s: len(s.pending)):
            slot.logits = []
            slot.draft = []
            take = min(len(slot.pending), self.n_batch - self._n)
            if take <= 0:
                continue
            for token in slot.pending[:take]:
                self._add(slot, token, logits=False)
            del slot.pending[:take]
            if not slot.pending:  # fully fed: its next token is sampled from this step
                self._batch.logits[self._n - 1] = 1
                slot.logits.append(self._n - 1)
                fed.append(slot)
        if self._drafter is not None and fed:
            share = (self.n_batch - self._n) // len(fed)
            for slot in fed:
                slot.draft = self._propose(slot, share)
                for token in slot.draft:
                    slot.logits.append(self._n)
                    self._add(slot, token, logits=True)
        self._batch.n_tokens = self._n

    def _add(self, slot: _Slot, token: int, logits: bool) -> None:
        put_token(self._batch, self._n, token, slot.n_past, slot.seq_id, logits)
        self.cached[slot.seq_id].append(token)
        slot.n_past += 1
        self._n += 1

    def _propose(self, slot: _Slot, room_in_batch: int) -> list[int]:
        account = slot.account
        # Drafted tokens take context room, and at most what the turn may still generate.
        room = min(room_in_batch, account.max_new - account.completion_tokens - 1,
                   self.n_ctx_per_sequence - slot.n_past - 1)
        n_max = min(slot.draft_len, room)
        if n_max <= 0 or n_max < self._draft_min:
            return []
        context = self.cached[slot.seq_id]
        draft = self._drafter.propose(slot.seq_id, context, n_max)[:n_max]
        for i, token in enumerate(draft):
            # The model decides where the text ends; a draft vocabulary may be a little larger.
            if token >= self.engine.n_vocab or self.engine.is_end_of_generation(token):
                draft = draft[:i]
                break
        if len(draft) < max(1, self._draft_min):
            draft = []
        # The drafter's view may hold more than is fed: keep it to what the KV cache gets.
        self._drafter.truncate(slot.seq_id, len(context) + len(draft))
        return draft

    # ---- sampling ------------------------------------------------------------------------

    def _sample(self, slot: _Slot, sink: EventSink) -> FinishReason | None:
        """Sample the model's token after the fed tokens, then after each drafted token while
        the draft agrees; every sampled token goes through `_take`."""
        llama_cpp = self._llama_cpp
        draft = slot.draft
        accepted = 0
        reason: FinishReason | None = None
        for i, index in enumerate(slot.logits):
            if slot.fast is not None:
                token = slot.fast.sample(llama_cpp.llama_get_logits_ith(self._ctx, index))
            else:
                token = llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, index)
            agrees = i < len(draft) and draft[i] == token
            reason, stop_verifying = self._take(slot, token, sink, agrees)
            accepted += agrees  # an agreeing token sits in the KV cache already
            if reason or stop_verifying or not agrees:
                break
        if draft:
            slot.drafted += len(draft)
            slot.accepted += accepted
            self._drop_rejected(slot, len(draft) - accepted)
            # Like transformers' "heuristic" schedule: a longer draft after a full acceptance,
            # a shorter one after a miss.
            slot.draft_len = min(self._draft_max, slot.draft_len + 2) \
                if accepted == len(draft) else max(1, self._draft_min, slot.draft_len - 1)
        return reason

    def _drop_rejected(self, slot: _Slot, n: int) -> None:
        """Remove the last `n` drafted tokens from the KV cache and the drafter's view."""
        if n <= 0:
            return
        slot.n_past -= n
        cached = self.cached[slot.seq_id]
        del cached[slot.n_past:]
        self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, slot.n_past, -1)
        if self._drafter is not None:
            self._drafter.truncate(slot.seq_id, slot.n_past)

    def _take(self, slot: _Slot, token: int, sink: EventSink,
              agrees: bool) -> tuple[FinishReason | None, bool]:
        """One sampled token: events, counts, the checks that end a turn. Returns the reason
        the turn ends (or None), and whether tokens drafted after it must be dropped (the
        loop injected tokens, so the draft no longer continues the context)."""
        account = slot.account
        cancel = slot.request.cancel
        if cancel is not None and cancel.is_set():  # sampled after the user stopped: dropped
            return "cancelled", True
        now = time.perf_counter()
        if account.first_token_at is None:
            account.first_token_at = now
        if self.engine.is_end_of_generation(token):
            return "stop", True
        account.completion_tokens += 1
        account.last_token_at = now
        text = slot.decoder.decode(self.engine.piece(token))
        self._emit(slot, account.feed(text, now), sink)
        if not agrees:
            slot.pending.append(token)  # not in the KV cache yet: fed next step
        self._grammar_after_think(slot)
        if account.is_looping(token):
            return "repetition", True
        if account.completion_tokens >= account.max_new:
            return "length", True
        budget = slot.request.params.reasoning_budget
        if 0 <= budget <= account.reasoning_tokens and account.splitter.in_reasoning:
            self._inject_close(slot, sink)
            if account.completion_tokens >= account.max_new:  # </think> filled the context
                return "length", True
            return None, True
        return None, False

    def _inject_close(self, slot: _Slot, sink: EventSink | None, *, early: bool = False) -> None:
        """End the think block (--reasoning-budget, or the user's "answer now") and let the
        model answer."""
        account = slot.account
        slot.pending.extend(self._close_tokens)
        account.max_new -= len(self._close_tokens)  # they take room like generated tokens
        if early:
            account.answered_early = True
        else:
            account.reasoning_budget_hit = True
        # Consumed either way: feeding the splitter is what ends the reasoning.
        tail = slot.decoder.decode(b"")
        events = list(account.feed(tail + THINK_CLOSE, time.perf_counter(), generated=False))
        self._grammar_after_think(slot)
        if sink is not None:
            self._emit(slot, events, sink)

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

    def _start_grammar(self, slot: _Slot) -> None:
        """Put the answer grammar into the slot's chain after the penalties (index 0), before
        the truncation and the final pick: the samplers after it keep their state (the
        dist sampler's random stream), so a seeded turn stays reproducible."""
        llama_cpp = self._llama_cpp
        slot.grammar_pending = False
        slot.fast = None  # the grammar lives in llama.cpp's chain
        grammar = new_grammar_sampler(self.engine, slot.request.params.answer_grammar or "")
        chain = slot.sampler
        rest = [llama_cpp.llama_sampler_chain_remove(chain, 1)
                for _ in range(llama_cpp.llama_sampler_chain_n(chain) - 1)]
        llama_cpp.llama_sampler_chain_add(chain, grammar)
        for sampler in rest:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

    def _grammar_after_think(self, slot: _Slot) -> None:
        splitter = slot.account.splitter
        if slot.grammar_pending and splitter.saw_reasoning and not splitter.in_reasoning:
            self._start_grammar(slot)

    @staticmethod
    def _emit(slot: _Slot, events: Iterable[Event], sink: EventSink) -> None:
        for event in events:
            sink(slot.request.key, event)


def put_token(batch, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    """Row `i` of a llama_batch: `token` at `pos` of sequence `seq_id`, its logits wanted or
    not."""
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = int(logits)


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
