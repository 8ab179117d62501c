"""What callers hand the engine and what it hands back: generation parameters, the loaded
model's description, the events of a streaming turn and its final statistics."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from localr1.config import Settings
from localr1.engine.rpc_split import LayerSplit

# "repetition": the engine stopped a turn that kept repeating the same span of tokens.
FinishReason = Literal["stop", "length", "cancelled", "repetition"]

# Reasoning effort as OpenAI's API and the F4 screen name it, as reasoning budgets in tokens
# (-1 = unlimited, 0 = answer without thinking). R1 distills think ~1-8k tokens on hard
# problems: "low" keeps a short look, "medium" most problems, "high" never cuts the trace.
REASONING_EFFORT_BUDGETS: dict[str, int] = {"none": 0, "low": 1024, "medium": 4096,
                                             "high": -1}


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
    # A llama.cpp GBNF grammar the answer (after </think>) must follow (see answer_format)
    answer_grammar: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> GenerationParams:
        s = settings.sampling
        values = dict(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                      repeat_penalty=s.repeat_penalty, seed=s.seed,
                      max_tokens=settings.max_tokens,
                      reasoning_budget=settings.reasoning_budget)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def recorded(self) -> dict:
        """The params as records and conversations keep them: the sampling settings, not the
        answer grammar (pages of GBNF, and it belongs to one turn, not to the conversation)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "answer_grammar"}


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
    # One line when the prompt format was guessed (no template of its own, no --chat-format).
    format_note: str | None = None
    # False when a running turn's thinking cannot be ended early (a model on a server).
    can_answer_now: bool = True
    flash_attn: str = "auto"  # as requested: "auto" | "on" | "off"
    kv_type: str = "f16"
    draft: str | None = None  # the draft model's name, "lookup", or None (no speculation)
    layer_split: LayerSplit | None = None  # with RPC workers (--rpc): the layers per device

    @property
    def placement(self) -> str:
        """Where the model runs, as shown in headers: 'CPU', 'GPU 20/29 layers (CUDA)' or
        with workers 'CPU 10 layers · RPC 127.0.0.1:50052 11 layers · ...'."""
        if self.layer_split is not None:
            return self.layer_split.placement
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
    answered_early: bool = False  # the user ended the thinking ("answer now")
    # Speculative decoding: tokens the draft proposed and how many of them the model kept.
    draft_tokens: int = 0
    draft_accepted: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / drafted, or None when nothing was drafted."""
        return self.draft_accepted / self.draft_tokens if self.draft_tokens else None


@dataclass(frozen=True)
class TurnDone:
    stats: TurnStats


Event = ContextTrimmed | ReasoningDelta | AnswerDelta | TurnDone
