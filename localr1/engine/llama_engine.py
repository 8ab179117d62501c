"""One loaded model: load a GGUF once, stream chat turns as typed events, cancel, measure.

The engine stays loaded across turns so llama.cpp reuses the KV cache of the common prompt
prefix (`Llama.generate` keeps the longest matching prefix). It imports no UI code: the CLI,
the TUI and the batch runner all drive it the same way:

    engine = Engine.load(EngineConfig(model_path))
    for event in engine.stream_chat([ChatMessage("user", "hi")], GenerationParams()):
        ...  # ContextTrimmed?, ReasoningDelta*, AnswerDelta*, then exactly one TurnDone
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localr1.chat_message import ChatMessage
from localr1.config import Settings
from localr1.engine import llama_log
from localr1.engine.chat_format import ChatFormat, resolve_chat_format
from localr1.engine.prompting import fit_to_context, reply_reserve
from localr1.engine.reasoning import SplitDelta, ThinkSplitter
from localr1.errors import GenerationError, InsufficientMemoryError, ModelLoadError
from localr1.models import hardware
from localr1.models.gguf_header import GGUFHeader, read_gguf_header
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    import llama_cpp

FinishReason = Literal["stop", "length", "cancelled"]

# What llama.cpp's --reasoning-budget injects to end a think block early.
THINK_CLOSE = "\n</think>\n\n"


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    context_size: int = 8192  # clamped to the model's training context
    gpu_layers: int | str = "auto"
    threads: int = 0  # 0 = hardware.default_threads()
    chat_format: str | None = None
    check_memory: bool = True

    @classmethod
    def from_settings(cls, model_path: Path, settings: Settings, **overrides) -> EngineConfig:
        values = dict(context_size=settings.context_size, gpu_layers=settings.gpu_layers,
                      threads=settings.threads, chat_format=settings.chat_format)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(Path(model_path), **values)


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    max_tokens: int = 0  # 0 = until the context window is full
    seed: int | None = None
    reasoning_budget: int = -1  # -1 = unlimited; 0 = answer without thinking

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> GenerationParams:
        s = settings.sampling
        values = dict(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                      repeat_penalty=s.repeat_penalty, seed=s.seed,
                      max_tokens=settings.max_tokens,
                      reasoning_budget=settings.reasoning_budget)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    name: str
    architecture: str | None
    quantization: str | None
    parameter_count: int
    size_bytes: int
    n_layers: int
    n_ctx: int
    n_ctx_train: int | None
    gpu_layers: int  # layers offloaded (llama.cpp counts n_layers + 1 for "all")
    backend: str
    threads: int
    chat_format: str
    is_r1: bool

    @property
    def placement(self) -> str:
        """Where the model runs, as shown in headers: 'CPU' or 'GPU 20/29 layers (CUDA)'."""
        if self.gpu_layers <= 0:
            return "CPU"
        total = self.n_layers + 1
        return f"{self.backend} {min(self.gpu_layers, total)}/{total} layers"


@dataclass(frozen=True)
class ContextTrimmed:
    dropped_messages: int
    prompt_tokens: int


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class TurnStats:
    finish_reason: FinishReason
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt prefix reused from the KV cache
    completion_tokens: int
    reasoning_tokens: int
    reasoning_truncated: bool  # the think block never closed
    reasoning_budget_hit: bool
    dropped_messages: int
    ttft_seconds: float  # request to first generated token (prompt processing included)
    tokens_per_second: float  # generated tokens / time from first to last token
    thinking_seconds: float | None  # first token to the end of the think block
    total_seconds: float


@dataclass(frozen=True)
class TurnDone:
    stats: TurnStats


Event = ContextTrimmed | ReasoningDelta | AnswerDelta | TurnDone


class Engine:
    """A loaded GGUF. Not thread-safe for concurrent turns; `cancel` may be set from any thread."""

    def __init__(self, llm: llama_cpp.Llama, header: GGUFHeader, info: ModelInfo,
                 chat_format: ChatFormat) -> None:
        self._llm = llm
        self.header = header
        self.info = info
        self.chat_format = chat_format
        self._vocab = llm._model.vocab  # for the cheap per-token end-of-generation check
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        header = read_gguf_header(config.model_path)  # before llama.cpp: it may abort on bad files
        n_ctx = _context_size(config.context_size, header.context_length)
        estimate = hardware.estimate_memory(header, n_ctx)
        backend = hardware.backend_info()
        gpu_layers = hardware.plan_gpu_layers(config.gpu_layers, estimate, backend,
                                              hardware.gpu_free_bytes(backend)
                                              if config.gpu_layers == "auto" else None)
        if config.check_memory:
            _check_memory(config.model_path, estimate, gpu_layers, n_ctx)
        threads = config.threads or hardware.default_threads()
        llm = _load_llama(config.model_path, header, n_ctx, gpu_layers, threads)
        chat_format = resolve_chat_format(llm, config.chat_format, header.architecture,
                                          config.model_path.name)
        info = ModelInfo(
            path=config.model_path, name=header.name or config.model_path.stem,
            architecture=header.architecture, quantization=header.file_type,
            parameter_count=header.parameter_count, size_bytes=header.file_size,
            n_layers=header.block_count or 0, n_ctx=llm.n_ctx(),
            n_ctx_train=header.context_length, gpu_layers=gpu_layers, backend=backend.name,
            threads=threads, chat_format=chat_format.source, is_r1=chat_format.is_r1,
        )
        return cls(llm, header, info, chat_format)

    def close(self) -> None:
        self._llm.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- prompts -------------------------------------------------------------------------

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.chat_format.render(messages).text

    def tokenize_prompt(self, text: str) -> list[int]:
        bos = self._llm.token_bos()
        bos_text = self._llm.detokenize([bos], special=True).decode("utf-8", "replace") \
            if bos >= 0 else ""
        # Templates usually write the BOS text themselves; never add a second one.
        add_bos = not (bos_text and text.startswith(bos_text))
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.tokenize_prompt(self.render_prompt(messages)))

    # ---- generation ----------------------------------------------------------------------

    def stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams,
                    *, system_prompt: str | None = None,
                    cancel: threading.Event | None = None) -> Iterator[Event]:
        """Stream one assistant turn for `history` (which ends with the user's message)."""
        with self._lock:
            yield from self._stream_chat(history, params, system_prompt, cancel or
                                         threading.Event())

    def _stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams,
                     system_prompt: str | None, cancel: threading.Event) -> Iterator[Event]:
        started = time.perf_counter()
        n_ctx = self.info.n_ctx
        fitted = fit_to_context(history, system_prompt, self.chat_format.is_r1,
                                self.count_prompt_tokens, n_ctx,
                                reply_reserve(n_ctx, params.max_tokens))
        if fitted.dropped_messages:
            yield ContextTrimmed(fitted.dropped_messages, fitted.prompt_tokens)
        prompt_text = self.render_prompt(fitted.messages)
        prompt = self.tokenize_prompt(prompt_text)
        turn = TurnAccount(
            prompt_tokens=len(prompt),
            cached_prompt_tokens=_common_prefix(self._llm._input_ids, prompt),
            splitter=ThinkSplitter(start_in_reasoning=prompt_text.rstrip().endswith("<think>")),
            max_new=_max_new_tokens(n_ctx, len(prompt), params.max_tokens),
            started=started,
        )
        if cancel.is_set():
            turn.finish_reason = "cancelled"
        else:
            try:
                yield from self._generate(turn, prompt, params, cancel)
            except RuntimeError as exc:  # llama_decode failures surface as RuntimeError
                raise GenerationError(f"llama.cpp failed while generating: {exc}") from None
        yield TurnDone(turn.stats(fitted.dropped_messages))

    def _generate(self, turn: TurnAccount, prompt: list[int], params: GenerationParams,
                  cancel: threading.Event) -> Iterator[Event]:
        import llama_cpp

        llm = self._llm
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop_on_cancel = llama_cpp.StoppingCriteriaList([lambda _ids, _logits: cancel.is_set()])
        context = list(prompt)  # prompt + generated (+ injected) tokens, for a restart
        budget = params.reasoning_budget
        if budget == 0 and turn.splitter.in_reasoning:
            yield from self._close_think(turn, context, decoder)
        restart = True
        while restart:
            restart = False
            tokens = llm.generate(context, top_k=params.top_k, top_p=params.top_p,
                                  min_p=params.min_p, temp=params.temperature,
                                  repeat_penalty=params.repeat_penalty,
                                  stopping_criteria=stop_on_cancel)
            for token in tokens:
                now = time.perf_counter()
                if turn.first_token_at is None:
                    turn.first_token_at = now
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    turn.finish_reason = "stop"
                    break
                context.append(token)
                turn.completion_tokens += 1
                turn.last_token_at = now
                yield from turn.feed(decoder.decode(llm.detokenize([token])), now)
                if cancel.is_set():
                    turn.finish_reason = "cancelled"
                    break
                if turn.completion_tokens >= turn.max_new:
                    turn.finish_reason = "length"
                    break
                if 0 <= budget <= turn.reasoning_tokens and turn.splitter.in_reasoning:
                    # Like llama.cpp's --reasoning-budget: end the think block ourselves and
                    # let the model answer. generate() reuses the KV cache for `context`.
                    tokens.close()
                    yield from self._close_think(turn, context, decoder)
                    restart = True
                    break
            else:
                # The generator stopped on its own: the cancel criterion, or a full context.
                turn.finish_reason = "cancelled" if cancel.is_set() else "length"
        yield from turn.finish(decoder.decode(b"", final=True))

    def _close_think(self, turn: TurnAccount, context: list[int], decoder) -> Iterator[Event]:
        injected = self._llm.tokenize(THINK_CLOSE.encode(), add_bos=False, special=True)
        context.extend(injected)
        turn.max_new -= len(injected)  # they take context room like generated tokens
        turn.reasoning_budget_hit = True
        yield from turn.feed(decoder.decode(b"") + THINK_CLOSE, time.perf_counter(),
                             generated=False)


@dataclass
class TurnAccount:
    """Mutable bookkeeping of one streaming turn: its splitter, token counts and times, and
    the TurnStats they add up to. The engine and the parallel decoder both keep one."""

    prompt_tokens: int
    cached_prompt_tokens: int
    splitter: ThinkSplitter
    max_new: int
    started: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    thinking_ended_at: float | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    reasoning_budget_hit: bool = False
    finish_reason: FinishReason = "length"

    def feed(self, text: str, now: float, generated: bool = True) -> Iterator[Event]:
        was_reasoning = self.splitter.in_reasoning
        deltas = self.splitter.feed(text)
        if generated and (was_reasoning or self.splitter.in_reasoning):
            self.reasoning_tokens += 1
        if was_reasoning and not self.splitter.in_reasoning:
            self.thinking_ended_at = now
        yield from delta_events(deltas)

    def finish(self, tail: str) -> Iterator[Event]:
        yield from delta_events(self.splitter.feed(tail) + self.splitter.finish())

    def stats(self, dropped_messages: int) -> TurnStats:
        end = time.perf_counter()
        first = self.first_token_at
        generating = (self.last_token_at or end) - first if first else 0.0
        thinking = None
        if self.splitter.saw_reasoning and first is not None:
            thinking = (self.thinking_ended_at or self.last_token_at or end) - first
        return TurnStats(
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            completion_tokens=self.completion_tokens,
            reasoning_tokens=self.reasoning_tokens if self.splitter.saw_reasoning else 0,
            reasoning_truncated=self.splitter.reasoning_truncated,
            reasoning_budget_hit=self.reasoning_budget_hit,
            dropped_messages=dropped_messages,
            ttft_seconds=(first - self.started) if first else end - self.started,
            tokens_per_second=_rate(self.completion_tokens, generating),
            thinking_seconds=thinking,
            total_seconds=end - self.started,
        )


def delta_events(deltas: Sequence[SplitDelta]) -> Iterator[ReasoningDelta | AnswerDelta]:
    """The splitter's deltas as engine events."""
    for delta in deltas:
        yield ReasoningDelta(delta.text) if delta.kind == "reasoning" else AnswerDelta(delta.text)


def _rate(tokens: int, seconds: float) -> float:
    # The first token's time is prompt processing; the rate counts the tokens decoded after it.
    return (tokens - 1) / seconds if tokens > 1 and seconds > 0 else 0.0


def _context_size(requested: int, trained: int | None) -> int:
    return min(requested, trained) if trained else requested


def _max_new_tokens(n_ctx: int, prompt_tokens: int, max_tokens: int) -> int:
    room = n_ctx - prompt_tokens
    return min(room, max_tokens) if max_tokens > 0 else room


def _common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n


def _check_memory(path: Path, estimate: hardware.MemoryEstimate, gpu_layers: int,
                  n_ctx: int) -> None:
    total_layers = estimate.n_layers + 1
    on_cpu_share = 1.0 - min(gpu_layers, total_layers) / total_layers
    needed = int((estimate.weights_bytes + estimate.kv_cache_bytes) * on_cpu_share) \
        + estimate.overhead_bytes
    available = hardware.memory_info().available_bytes
    if needed > available:
        fmt = format_bytes
        raise InsufficientMemoryError(
            f"{path.name} needs about {fmt(needed)} of RAM (weights {fmt(estimate.weights_bytes)}"
            f" + KV cache {fmt(estimate.kv_cache_bytes)} at --ctx {n_ctx}) but only "
            f"{fmt(available)} is free; use a smaller quant or a smaller --ctx"
        )


def _load_llama(path: Path, header: GGUFHeader, n_ctx: int, gpu_layers: int,
                threads: int) -> llama_cpp.Llama:
    import llama_cpp

    llama_log.install()
    llama_log.take_errors()
    try:
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_gpu_layers=gpu_layers, n_threads=threads,
            n_threads_batch=threads, verbose=False,
            # We render prompts ourselves; a placeholder format stops llama-cpp-python from
            # guessing one (and logging about it).
            chat_format="chatml",
        )
    except ValueError as exc:
        detail = "; ".join(llama_log.take_errors()[-2:]) or str(exc)
        arch = header.architecture or "unknown"
        raise ModelLoadError(
            f"{path.name}: llama.cpp could not load this model (architecture '{arch}'): "
            f"{detail.strip()}; this llama-cpp-python build may not support it "
            "(pip install -U llama-cpp-python)"
        ) from None
