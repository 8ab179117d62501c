"""One loaded model: load a GGUF once, stream chat turns as typed events, cancel, measure.

The engine stays loaded across turns so llama.cpp reuses the KV cache of the common prompt
prefix (`Llama.generate` keeps the longest matching prefix). It imports no UI code: the CLI,
the TUI and the batch runner all drive it the same way:

    engine = Engine.load(EngineConfig(model_path))
    for event in engine.stream_chat([ChatMessage("user", "hi")], GenerationParams()):
        ...  # ContextTrimmed?, ReasoningDelta*, AnswerDelta*, then exactly one TurnDone

It is also the only module that touches the `llama_cpp.Llama` object: the parallel decoder
gets the model handle, tokenizer and prompts through the public methods below.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from localr1.chat_message import ChatMessage
from localr1.config import Settings
from localr1.engine.chat_format import ChatFormat, resolve_chat_format
from localr1.engine.events import (
    ContextTrimmed,
    Event,
    GenerationParams,
    ModelInfo,
    TurnDone,
)
from localr1.engine.loading import check_memory, context_size, load_llama
from localr1.engine.prompting import (
    ModelMessage,
    PreparedPrompt,
    fit_to_context,
    reply_reserve,
)
from localr1.engine.reasoning import ThinkSplitter
from localr1.engine.turn_account import TurnAccount, max_new_tokens
from localr1.errors import GenerationError
from localr1.models import hardware
from localr1.models.gguf_header import GGUFHeader, read_gguf_header

if TYPE_CHECKING:
    import llama_cpp

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


class Engine:
    """A loaded GGUF. Not thread-safe for concurrent turns; `cancel` may be set from any thread."""

    def __init__(self, llm: llama_cpp.Llama, header: GGUFHeader, info: ModelInfo,
                 chat_format: ChatFormat) -> None:
        import llama_cpp

        self._llm = llm
        self.header = header
        self.info = info
        self.chat_format = chat_format
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._vocab_is_eog = llama_cpp.llama_vocab_is_eog  # checked once per generated token
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        header = read_gguf_header(config.model_path)  # before llama.cpp: it may abort on bad files
        n_ctx = context_size(config.context_size, header.context_length)
        estimate = hardware.estimate_memory(header, n_ctx)
        backend = hardware.backend_info()
        gpu_layers = hardware.plan_gpu_layers(config.gpu_layers, estimate, backend,
                                              hardware.gpu_free_bytes(backend)
                                              if config.gpu_layers == "auto" else None)
        if config.check_memory:
            check_memory(config.model_path, estimate, gpu_layers, n_ctx)
        threads = config.threads or hardware.default_threads()
        llm = load_llama(config.model_path, header, n_ctx, gpu_layers, threads)
        chat_format = resolve_chat_format(llm, config.chat_format, header.architecture,
                                          config.model_path.name)
        info = ModelInfo(
            path=config.model_path, name=header.name or config.model_path.stem,
            architecture=header.architecture, quantization=header.file_type,
            parameter_count=header.parameter_count, size_bytes=header.file_size,
            n_layers=header.block_count or 0, n_ctx=llm.n_ctx(),
            n_ctx_train=header.context_length, gpu_layers=gpu_layers, backend=backend.name,
            threads=threads, chat_format=chat_format.source, is_r1=chat_format.is_r1,
            format_note=chat_format.note,
        )
        return cls(llm, header, info, chat_format)

    def close(self) -> None:
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
    def n_vocab(self) -> int:
        return self._llm.n_vocab()

    def is_end_of_generation(self, token: int) -> bool:
        return self._vocab_is_eog(self._vocab, token)

    def detokenize(self, tokens: list[int]) -> bytes:
        return self._llm.detokenize(tokens)

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
        turn = TurnAccount(
            prompt_tokens=len(prompt.tokens),
            cached_prompt_tokens=_common_prefix(self._llm.input_ids[:self._llm.n_tokens],
                                                prompt.tokens),
            splitter=ThinkSplitter(start_in_reasoning=prompt.start_in_reasoning),
            max_new=max_new_tokens(self.info.n_ctx, len(prompt.tokens), params.max_tokens),
            started=started,
        )
        if cancel.is_set():
            turn.finish_reason = "cancelled"
        else:
            try:
                yield from self._generate(turn, prompt.tokens, params, cancel, answer_now)
            except RuntimeError as exc:  # llama_decode failures surface as RuntimeError
                raise GenerationError(f"llama.cpp failed while generating: {exc}") from None
        yield TurnDone(turn.stats(prompt.dropped_messages))

    def _generate(self, turn: TurnAccount, prompt: list[int], params: GenerationParams,
                  cancel: threading.Event, answer_now: threading.Event) -> Iterator[Event]:
        import llama_cpp

        llm = self._llm
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop_on_cancel = llama_cpp.StoppingCriteriaList([lambda _ids, _logits: cancel.is_set()])
        context = list(prompt)  # prompt + generated (+ injected) tokens, for a restart
        budget = params.reasoning_budget
        if turn.splitter.in_reasoning and (budget == 0 or answer_now.is_set()):
            yield from self._close_think(turn, context, decoder, early=answer_now.is_set())
        grammar = None  # the answer's grammar, from the first token after </think>
        restart = self._has_room(turn)
        while restart:
            restart = False
            if grammar is None and self._grammar_applies(turn, params):
                grammar = llama_cpp.LlamaGrammar.from_string(params.answer_grammar,
                                                             verbose=False)
            tokens = llm.generate(context, top_k=params.top_k, top_p=params.top_p,
                                  min_p=params.min_p, temp=params.temperature,
                                  repeat_penalty=params.repeat_penalty,
                                  stopping_criteria=stop_on_cancel, grammar=grammar)
            for token in tokens:
                now = time.perf_counter()
                if turn.first_token_at is None:
                    turn.first_token_at = now
                if self.is_end_of_generation(token):
                    turn.finish_reason = "stop"
                    break
                context.append(token)
                turn.completion_tokens += 1
                turn.last_token_at = now
                yield from turn.feed(decoder.decode(llm.detokenize([token])), now)
                if cancel.is_set():
                    turn.finish_reason = "cancelled"
                    break
                if turn.is_looping(token):
                    turn.finish_reason = "repetition"
                    break
                if turn.completion_tokens >= turn.max_new:
                    turn.finish_reason = "length"
                    break
                early = answer_now.is_set()
                if turn.splitter.in_reasoning and (early or 0 <= budget <= turn.reasoning_tokens):
                    # Like llama.cpp's --reasoning-budget: end the think block ourselves and
                    # let the model answer. generate() reuses the KV cache for `context`.
                    tokens.close()
                    yield from self._close_think(turn, context, decoder, early=early)
                    restart = self._has_room(turn)
                    break
                if grammar is None and self._grammar_applies(turn, params):
                    tokens.close()  # the model closed its think block: the answer follows
                    restart = True  # the grammar from the next token on
                    break
            else:
                # The generator stopped on its own: the cancel criterion, or a full context.
                turn.finish_reason = "cancelled" if cancel.is_set() else "length"
        yield from turn.finish(decoder.decode(b"", final=True))

    def _grammar_applies(self, turn: TurnAccount, params: GenerationParams) -> bool:
        """Whether the answer has begun, so `params.answer_grammar` constrains what follows:
        after the think block; from the first token for a model that does not think (an R1
        model opens its own think block with the original template)."""
        splitter = turn.splitter
        return params.answer_grammar is not None and not splitter.in_reasoning and (
            splitter.saw_reasoning or not self.chat_format.is_r1)

    @staticmethod
    def _has_room(turn: TurnAccount) -> bool:
        """Whether another token fits; if not, the turn ends "length" (decoding past the
        context would fail in llama.cpp)."""
        if turn.completion_tokens < turn.max_new:
            return True
        turn.finish_reason = "length"
        return False

    def _close_think(self, turn: TurnAccount, context: list[int], decoder, *,
                     early: bool = False) -> Iterator[Event]:
        """End the think block: the reasoning budget is spent, or (`early`) the user asked
        for the answer now."""
        injected = self.think_close_tokens
        context.extend(injected)
        turn.max_new -= len(injected)  # they take context room like generated tokens
        if early:
            turn.answered_early = True
        else:
            turn.reasoning_budget_hit = True
        yield from turn.feed(decoder.decode(b"") + THINK_CLOSE, time.perf_counter(),
                             generated=False)


def _common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n
