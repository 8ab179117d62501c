"""One conversation's settings: what its turns are generated with, saved with it (params).

Generation settings (temperature, top_p, max tokens, reasoning budget) go into
`GenerationParams` for each turn, over the conversation's other stored sampling settings
(`run --top-k`, `--seed`); load settings (context size, GPU layers) decide how the engine is
loaded, so changing them reloads the model. The system prompt is the conversation's
own column. Defaults come from the user's config (`Settings`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localr1.config import Settings
from localr1.engine.events import REASONING_EFFORT_BUDGETS
from localr1.store import Conversation
from localr1.store.params import SAMPLING, turn_sampling

if TYPE_CHECKING:
    from localr1.engine.llama_engine import EngineConfig, GenerationParams


@dataclass(frozen=True)
class ConversationSettings:
    temperature: float
    top_p: float
    max_tokens: int  # 0 = until the context is full
    reasoning_budget: int  # -1 = unlimited
    context_size: int
    gpu_layers: int | str
    system_prompt: str | None = None
    # The conversation's stored sampling settings (top_k, min_p, seed from `run`, ...): F4
    # does not show them, but its turns use them, as `run -c` does.
    stored_sampling: tuple[tuple[str, int | float], ...] = ()

    @classmethod
    def defaults(cls, settings: Settings) -> ConversationSettings:
        return cls(temperature=settings.sampling.temperature, top_p=settings.sampling.top_p,
                   max_tokens=settings.max_tokens, reasoning_budget=settings.reasoning_budget,
                   context_size=settings.context_size, gpu_layers=settings.gpu_layers)

    @classmethod
    def of(cls, conversation: Conversation, settings: Settings) -> ConversationSettings:
        """What a stored conversation says, defaults for what it does not."""
        base = cls.defaults(settings)
        params = conversation.params
        values: dict[str, Any] = {}
        for name, kind in (("temperature", float), ("top_p", float), ("max_tokens", int),
                           ("reasoning_budget", int), ("context_size", int)):
            value = params.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = kind(value)
        gpu = params.get("gpu_layers")
        if gpu == "auto" or (isinstance(gpu, int) and not isinstance(gpu, bool)):
            values["gpu_layers"] = gpu
        stored = tuple((name, value) for name, value in params.items() if name in SAMPLING)
        return replace(base, system_prompt=conversation.system_prompt, stored_sampling=stored,
                       **values)

    @property
    def reasoning_effort(self) -> str:
        """The reasoning budget by its effort name (none/low/medium/high), or "custom"."""
        return reasoning_effort(self.reasoning_budget)

    def generation_params(self, settings: Settings) -> GenerationParams:
        from localr1.engine.llama_engine import GenerationParams

        return GenerationParams.from_settings(settings, **turn_sampling(
            dict(self.stored_sampling),
            {"temperature": self.temperature, "top_p": self.top_p,
             "max_tokens": self.max_tokens, "reasoning_budget": self.reasoning_budget}))

    def edited_params(self) -> dict[str, Any]:
        """The params F4 edits, for `Store.update_settings` (which keeps the others)."""
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "reasoning_budget": self.reasoning_budget,
                "context_size": self.context_size, "gpu_layers": self.gpu_layers}

    def engine_config(self, model_path: Path, settings: Settings) -> EngineConfig:
        from localr1.engine.llama_engine import EngineConfig

        return EngineConfig.from_settings(model_path, settings, context_size=self.context_size,
                                          gpu_layers=self.gpu_layers)

    def params_json(self, settings: Settings) -> dict[str, Any]:
        """The conversation's params column: the generation params (as `localr1 run` writes
        them) plus the load settings."""
        data = asdict(self.generation_params(settings))
        data.update(context_size=self.context_size, gpu_layers=self.gpu_layers)
        return data


def reasoning_effort(budget: int) -> str:
    """The effort whose budget `budget` is (REASONING_EFFORT_BUDGETS), else "custom"."""
    return next((name for name, value in REASONING_EFFORT_BUDGETS.items() if value == budget),
                "custom")
