"""One loaded model: load a GGUF once, stream chat turns as typed events, cancel, measure.

The engine stays loaded across turns so llama.cpp reuses the KV cache of the common prompt
prefix (the decode loop keeps what each sequence's cache holds). It imports no UI code: the CLI,
the TUI and the batch runner all drive it the same way:

    engine = Engine.load(EngineConfig(model_path))
    for event in engine.stream_chat([ChatMessage("user", "hi")], GenerationParams()):
        ...  # ContextTrimmed?, ReasoningDelta*, AnswerDelta*, then exactly one TurnDone

It is also the only module that touches the `llama_cpp.Llama` object: the parallel decoder
gets the model handle, tokenizer and prompts through the public methods below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from localr1.chat_message import ChatMessage
from localr1.config import DEFAULT_RPC_TIMEOUT, Settings
from localr1.engine import rpc_watchdog
from localr1.engine.chat_format import ChatFormat, resolve_chat_format
from localr1.engine.decode_loop import THINK_CLOSE, DecodeLoop, SequenceRequest, put_token
from localr1.engine.drafters import DraftModel, LookupDrafter, ModelDrafter
from localr1.engine.events import (
    ContextTrimmed,
    Event,
    GenerationParams,
    ModelInfo,
)
from localr1.engine.loading import (
    check_memory,
    check_split_memory,
    context_size,
    load_llama,
    new_sequences_context,
    read_model_headers,
)
from localr1.engine.prompting import (
    ModelMessage,
    PreparedPrompt,
    fit_to_context,
    reply_reserve,
)
from localr1.engine.rpc_split import SplitDevice
from localr1.engine.split_memory import SplitMemory, plan_split_memory
from localr1.engine.thread_policy import ThreadChoice, ThreadGovernor, choose_threads
from localr1.models import hardware
from localr1.models.gguf_header import GGUFHeader

if TYPE_CHECKING:
    import llama_cpp

__all__ = ["THINK_CLOSE", "Engine", "EngineConfig", "GenerationParams", "ModelInfo"]


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    context_size: int = 8192  # clamped to the model's training context
    gpu_layers: int | str = "auto"
    threads: int = 0  # 0 = the cores other work leaves free (engine.thread_policy)
    chat_format: str | None = None
    check_memory: bool = True
    flash_attn: str = "auto"  # "auto" | "on" | "off"
    kv_type: str = "f16"  # "f16" | "q8_0" | "q4_0"
    # Speculative decoding: a draft GGUF (resolved by the caller) or "lookup" (n-grams from the
    # prompt and the text so far); None = none.
    draft: Path | str | None = None
    draft_max: int = 16
    draft_min: int = 0
    rpc: tuple[str, ...] = ()  # `localr1 worker` endpoints that take part of the layers
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT  # silent workers end a decode after it

    @classmethod
    def from_settings(cls, model_path: Path, settings: Settings, **overrides) -> EngineConfig:
        """`draft` is not taken from settings.draft_model: a model name needs resolving
        (models.library), which the front end does and passes as `draft=`."""
        values = dict(context_size=settings.context_size, gpu_layers=settings.gpu_layers,
                      threads=settings.threads, chat_format=settings.chat_format,
                      flash_attn=settings.flash_attn, kv_type=settings.kv_type,
                      draft_max=settings.draft_max, draft_min=settings.draft_min,
                      rpc=settings.rpc, rpc_timeout=settings.rpc_timeout)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(Path(model_path), **values)


class Engine:
    """A loaded GGUF. Not thread-safe for concurrent turns; `cancel` may be set from any thread."""

    def __init__(self, llm: llama_cpp.Llama, header: GGUFHeader, info: ModelInfo,
                 chat_format: ChatFormat, config: EngineConfig | None = None,
                 threads: ThreadChoice | None = None, draft: DraftModel | None = None) -> None:
        import llama_cpp

        self._llm = llm
        self.header = header
        self.info = info
        self.chat_format = chat_format
        self.config = config or EngineConfig(info.path)
        self.thread_choice = threads or ThreadChoice(info.threads, "as loaded", fixed=True)
        self._draft = draft
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._vocab_is_eog = llama_cpp.llama_vocab_is_eog  # checked once per generated token
        self._lock = threading.Lock()
        self._pieces: dict[int, bytes] = {}
        self._loop: DecodeLoop | None = None  # made at the first chat turn (see _chat_loop)

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        parts = read_model_headers(config.model_path)  # a split GGUF's weights: every part's
        header = parts[0]
        n_ctx = context_size(config.context_size, header.context_length)
        estimate = hardware.estimate_memory(parts, n_ctx, config.kv_type)
        backend = hardware.backend_info()
        draft_path = config.draft if isinstance(config.draft, Path) else None
        draft_estimate = hardware.draft_estimate(read_model_headers(draft_path), n_ctx,
                                                 config.kv_type) if draft_path else None
        if config.rpc:  # here, so the TUI's and serve's model process has it too
            from localr1.engine import rpc_watchdog

            rpc_watchdog.set_limit(config.rpc_timeout)
        planned = _rpc_split(config, estimate, draft_estimate, backend) if config.rpc else None
        layer_split = planned.split if planned else None
        gpu_layers = layer_split.offloaded if layer_split else hardware.plan_gpu_layers(
            config.gpu_layers, estimate, backend,
            hardware.gpu_free_bytes(backend) if config.gpu_layers == "auto" else None)
        if config.check_memory and planned:
            check_split_memory(config.model_path, planned, estimate, n_ctx,
                               draft=draft_estimate, kv_type=config.kv_type)
        elif config.check_memory:
            check_memory(config.model_path, estimate, gpu_layers, n_ctx, kv_type=config.kv_type,
                         draft=draft_estimate)
        thread_choice = choose_threads(config.threads)
        config = replace(config, flash_attn=_flash_attn_for(config, gpu_layers))
        llm = load_llama(config.model_path, header, n_ctx, gpu_layers, thread_choice.threads,
                         flash_attn=config.flash_attn, kv_type=config.kv_type,
                         tensor_split=layer_split.tensor_split if layer_split else None)
        draft = None
        try:
            chat_format = resolve_chat_format(llm, config.chat_format, header.architecture,
                                              config.model_path.name)
            draft = _load_draft(draft_path, gpu_layers, llm, header, config) \
                if draft_path else None
        except BaseException:
            llm.close()
            raise
        draft_name = "lookup" if config.draft == "lookup" else draft.name if draft else None
        info = ModelInfo(
            path=config.model_path, name=header.name or config.model_path.stem,
            architecture=header.architecture, quantization=header.file_type,
            parameter_count=header.parameter_count, size_bytes=header.file_size,
            n_layers=header.block_count or 0, n_ctx=llm.n_ctx(),
            n_ctx_train=header.context_length, gpu_layers=gpu_layers, backend=backend.name,
            threads=thread_choice.threads, chat_format=chat_format.source,
            is_r1=chat_format.is_r1, format_note=chat_format.note,
            flash_attn=config.flash_attn, kv_type=config.kv_type, draft=draft_name,
            layer_split=layer_split,
        )
        _warm_up(llm)
        try:
            return cls(llm, header, info, chat_format, config, thread_choice, draft)
        except BaseException:
            if draft is not None:
                draft.close()
            llm.close()
            raise

    def new_context(self, model, n_seq: int, n_ctx_per_sequence: int, n_batch: int,
                    threads: int):
        """A context for `n_seq` sequences on `model` (this one's or its draft's) with this
        engine's flash attention and KV type; None when llama.cpp cannot make it."""
        return new_sequences_context(model, n_seq, n_ctx_per_sequence, n_batch, threads,
                                     self.config.flash_attn, self.config.kv_type)

    def loop_options(self, n_seq: int, n_ctx_per_sequence: int, threads: int) -> dict:
        """A DecodeLoop's drafter, draft sizes and thread governor for a context of `n_seq`
        sequences decoding on `threads` (the caller's loop owns and closes the drafter)."""
        drafter = None
        if self.config.draft == "lookup":
            drafter = LookupDrafter()
        elif self._draft is not None:
            drafter = ModelDrafter(self._draft, n_seq, n_ctx_per_sequence, threads,
                                   self.new_context)
        return dict(drafter=drafter, draft_max=self.config.draft_max,
                    draft_min=self.config.draft_min,
                    threads=ThreadGovernor(threads, self.thread_choice.fixed))

    def _chat_loop(self) -> DecodeLoop:
        """Chat and run decode on the Llama object's own context (llama-cpp-python only made
        it), one sequence, through the same loop as batch and serve. Made on first use: a
        server or a batch run decodes on contexts of their own and never needs it."""
        if self._loop is None:
            self._loop = DecodeLoop(self, self._llm._ctx.ctx, self.info.n_ctx,
                                    self._llm.context_params.n_batch,
                                    **self.loop_options(1, self.info.n_ctx, self.info.threads))
        return self._loop

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
        if self._draft is not None:
            self._draft.close()
        self._llm.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the model, for other decode loops -------------------------------------------------

    @property
    def model_handle(self) -> llama_cpp.llama_model_p:
        """The loaded llama_model, for a decode loop with its own llama_context."""
        return self._llm.model

    @property
    def draft_header(self) -> GGUFHeader | None:
        """The draft model's GGUF header, when a draft model (not lookup) is loaded."""
        return self._draft.header if self._draft is not None else None

    @property
    def n_vocab(self) -> int:
        return self._llm.n_vocab()

    def is_end_of_generation(self, token: int) -> bool:
        return self._vocab_is_eog(self._vocab, token)

    def detokenize(self, tokens: list[int]) -> bytes:
        return self._llm.detokenize(tokens)

    def piece(self, token: int) -> bytes:
        """One generated token's bytes, as `detokenize([token])` gives them, from a cache: the
        decode loop asks once per token, and llama-cpp-python's path costs ~80 us a call."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._llm.detokenize([token])
        return piece

    @cached_property
    def think_close_tokens(self) -> list[int]:
        """THINK_CLOSE as tokens, for --reasoning-budget."""
        return self._llm.tokenize(THINK_CLOSE.encode(), add_bos=False, special=True)

    # ---- prompts -------------------------------------------------------------------------

    def prepare_prompt(self, history: Sequence[ChatMessage], params: GenerationParams, *,
                       system_prompt: str | None = None,
                       n_ctx: int | None = None) -> PreparedPrompt:
        """History → fitted model messages → prompt text → tokens, for a context of `n_ctx`
        tokens (default: the engine's own) with room for the reply that `params` allow."""
        n_ctx = n_ctx or self.info.n_ctx
        return fit_to_context(history, system_prompt, self.chat_format.is_r1, self._encode,
                              self.count_message_tokens, n_ctx,
                              reply_reserve(n_ctx, params.max_tokens))

    def render_prompt(self, messages: list[ModelMessage]) -> str:
        return self.chat_format.render(messages).text

    def tokenize_prompt(self, text: str) -> list[int]:
        # Templates usually write the BOS text themselves; never add a second one.
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_prompt_tokens(self, messages: list[ModelMessage]) -> int:
        return len(self._encode(messages)[1])

    def count_message_tokens(self, message: ModelMessage) -> int:
        """One message's estimated share of a prompt: its content's tokens plus the template's
        markup around a message (measured once)."""
        return self._content_tokens(message["content"]) + self._message_overhead

    def _encode(self, messages: list[ModelMessage]) -> tuple[str, list[int]]:
        text = self.render_prompt(messages)
        return text, self.tokenize_prompt(text)

    @cached_property
    def _bos_text(self) -> str:
        bos = self._llm.token_bos()
        return self._llm.detokenize([bos], special=True).decode("utf-8", "replace") \
            if bos >= 0 else ""

    @cached_property
    def _message_overhead(self) -> int:
        # A user/assistant pair more, minus its content, is two messages' worth of markup.
        one = {"role": "user", "content": "x"}
        pair = [one, {"role": "assistant", "content": "x"}]
        markup = self.count_prompt_tokens([*pair, one]) - self.count_prompt_tokens([one]) \
            - 2 * self._content_tokens("x")
        return max(0, -(-markup // 2))  # rounded up: an estimate that errs long

    def _content_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # ---- generation ----------------------------------------------------------------------

    def stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams,
                    *, system_prompt: str | None = None,
                    cancel: threading.Event | None = None,
                    answer_now: threading.Event | None = None) -> Iterator[Event]:
        """Stream one assistant turn for `history` (which ends with the user's message).

        `cancel` stops the turn; `answer_now`, set while the model thinks, ends the think block
        at once (as the reasoning budget does) and lets the model answer."""
        with self._lock:
            yield from self._stream_chat(history, params, system_prompt,
                                         cancel or threading.Event(),
                                         answer_now or threading.Event())

    def _stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams,
                     system_prompt: str | None, cancel: threading.Event,
                     answer_now: threading.Event) -> Iterator[Event]:
        started = time.perf_counter()
        prompt = self.prepare_prompt(history, params, system_prompt=system_prompt)
        if prompt.dropped_messages:
            yield ContextTrimmed(prompt.dropped_messages, len(prompt.tokens))
        events: list[Event] = []
        loop = self._chat_loop()
        slot = loop.start(0, SequenceRequest(key=0, prompt=prompt, params=params, cancel=cancel,
                                             answer_now=answer_now))
        slot.account.started = started  # time to first token counts the prompt's rendering
        finished = False
        try:
            reason = "cancelled" if cancel.is_set() else \
                "length" if slot.account.max_new <= 0 else None
            while reason is None:
                if cancel.is_set():  # checked per token inside a step too
                    reason = "cancelled"
                elif loop.step([slot], lambda _key, event: events.append(event)):
                    reason = slot.done
                yield from events
                events.clear()
            finished = True
            loop.finish(slot, reason, lambda _key, event: events.append(event))
            yield from events
        finally:
            if not finished:  # a failed decode, or the caller stopped reading
                loop.discard(slot)


def _warm_up(llm: llama_cpp.Llama) -> None:
    """One decode of [BOS, EOS], then an empty cache, as llama.cpp's tools do at load: the first
    run's one-off costs (buffers, threads, the weights' first reads) belong to loading, not to
    the first answer's time to first token."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    tokens = [t for t in (llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab))
              if t >= 0] or [0]
    ctx = llm._ctx.ctx
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, token in enumerate(tokens):
            put_token(batch, i, token, i, 0, i == len(tokens) - 1)
        batch.n_tokens = len(tokens)
        # Watched, not timed: its one-off costs would stretch every decode's time limit.
        with rpc_watchdog.decoding(len(tokens), measured=False):
            llama_cpp.llama_decode(ctx, batch)  # a failure shows at the first real decode
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)


def _rpc_split(config: EngineConfig, estimate: hardware.MemoryEstimate,
               draft: hardware.MemoryEstimate | None,
               backend: hardware.BackendInfo) -> SplitMemory:
    """Connect the workers (their devices come first in llama.cpp's list, a local GPU after
    them) and split the layers between this machine's RAM, less the draft kept here, and their
    free memory, as the fit labels split them."""
    from localr1.engine.rpc_backend import connect_workers

    workers = connect_workers(config.rpc)
    shared = {w.endpoint for w in workers if sum(o.endpoint == w.endpoint for o in workers) > 1}
    devices = [SplitDevice(f"RPC {w.endpoint}" + (f" {w.name}" if w.endpoint in shared else ""),
                           w.free_bytes) for w in workers]
    if backend.can_offload:  # untested here: no GPU where localr1 is developed
        devices.append(SplitDevice(backend.name, hardware.gpu_free_bytes(backend) or 0))
    return plan_split_memory(estimate, config.gpu_layers,
                             hardware.memory_info().available_bytes, devices, draft)


def _flash_attn_for(config: EngineConfig, gpu_layers: int) -> str:
    """Flash attention as llama.cpp gets it. With a draft on the CPU, "auto" means off: the
    CPU's flash-attention kernel rounds a batch of drafted tokens differently from one token at
    a time, which flips near-ties at temperature 0 (measured on SmolLM2); without it the output
    is token for token the undrafted one. A quantized V cache needs it, so it stays on there."""
    if config.flash_attn == "auto" and config.draft and gpu_layers == 0 \
            and config.kv_type == "f16":
        return "off"
    return config.flash_attn


def _load_draft(path: Path, gpu_layers: int, llm: llama_cpp.Llama, header: GGUFHeader,
                config: EngineConfig) -> DraftModel:
    """The draft GGUF, checked against the model like llama.cpp checks it."""
    from localr1.engine.draft_compat import check_draft_compatible

    draft = DraftModel(path, gpu_layers, cpu_only=bool(config.rpc))  # RPC: never the workers
    try:
        # Named by their files, as the user gave them (GGUF-internal names are often opaque).
        check_draft_compatible(llm.model, draft.model, config.model_path.stem, path.stem)
    except BaseException:
        draft.close()
        raise
    return draft
