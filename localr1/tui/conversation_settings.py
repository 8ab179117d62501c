"""One conversation's settings: what its turns are generated with, saved with it (params).

Generation settings (temperature, top_p, max tokens, reasoning budget) go into
`GenerationParams` for each turn, over the conversation's other stored sampling settings
(`run --top-k`, `--seed`); load settings (context size, GPU layers, KV cache type, flash
attention, the draft model) decide how the engine is loaded, so changing them reloads the
model. The system prompt is the conversation's own column. Defaults come from the user's
config (`Settings`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localr1.config import Settings, checked_setting
from localr1.engine.events import REASONING_EFFORT_BUDGETS
from localr1.models.decode_options import NO_DRAFT, is_no_draft, resolve_draft
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
    # The conversation's own KV cache and draft choices (F4); None: config.toml's (or `chat
    # --kv-type/--draft`), so a conversation follows the config until it chooses.
    kv_type: str | None = None
    flash_attn: str | None = None
    draft_model: str | None = None  # a model name or GGUF path, "lookup" or "none"
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
        for name in _LOAD_TEXTS:
            if isinstance(params.get(name), str):
                # An odd value stored elsewhere: the default instead.
                with contextlib.suppress(ValueError):
                    values[name] = checked_setting(name, params[name])
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
                "context_size": self.context_size, "gpu_layers": self.gpu_layers,
                **self._chosen_decode_options()}

    def _chosen_decode_options(self) -> dict[str, str]:
        chosen = {"kv_type": self.kv_type, "flash_attn": self.flash_attn,
                  "draft_model": self.draft_model}
        return {name: value for name, value in chosen.items() if value is not None}

    def decode_options(self, settings: Settings) -> tuple[str, str, str]:
        """(KV cache type, flash attention, draft) in effect: the conversation's choice, else
        the config's; the draft is "none" when there is none."""
        draft = self.draft_model if self.draft_model is not None else settings.draft_model
        return (self.kv_type or settings.kv_type, self.flash_attn or settings.flash_attn,
                NO_DRAFT if is_no_draft(draft) else str(draft))

    def engine_config(self, model_path: Path, settings: Settings,
                      models_dir: Path) -> EngineConfig:
        """How to load the model at `model_path` for this conversation; ModelFileError (one
        line) when its draft model cannot be found in `models_dir` or at its path."""
        from localr1.engine.llama_engine import EngineConfig

        kv_type, flash_attn, draft = self.decode_options(settings)
        return EngineConfig.from_settings(
            model_path, settings, context_size=self.context_size, gpu_layers=self.gpu_layers,
            kv_type=kv_type, flash_attn=flash_attn, draft=resolve_draft(draft, models_dir))

    def params_json(self, settings: Settings) -> dict[str, Any]:
        """The conversation's params column: the generation params (as `localr1 run` writes
        them) plus the load settings."""
        data = asdict(self.generation_params(settings))
        data.update(context_size=self.context_size, gpu_layers=self.gpu_layers,
                    **self._chosen_decode_options())
        return data


# Load settings stored as text in a conversation's params, checked like config.toml's.
_LOAD_TEXTS = ("kv_type", "flash_attn", "draft_model")


def reasoning_effort(budget: int) -> str:
    """The effort whose budget `budget` is (REASONING_EFFORT_BUDGETS), else "custom"."""
    return next((name for name, value in REASONING_EFFORT_BUDGETS.items() if value == budget),
                "custom")
