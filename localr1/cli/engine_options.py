"""Options for how a local model is loaded and decoded, shared by `run`, `chat`, `batch`,
`serve` and `doctor --model`: speculative decoding (`--draft MODEL|lookup|none`,
`--draft-max`, `--draft-min`), the KV cache (`--flash-attn`, `--kv-type`) and RPC workers that
take part of the layers (`--rpc HOST:PORT[,HOST:PORT...]`, or `--rpc none`).

Each value is checked by config.checked_setting, as in config.toml, and wins over it. The
command receives them as one `engine_flags: EngineFlags` argument."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from localr1.cli.params import setting_check
from localr1.config import KV_TYPES

if TYPE_CHECKING:
    from localr1.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

FLASH_ATTN_CHOICES = ("auto", "on", "off")
NO_RPC = "none"  # --rpc none: no workers for this command, whatever config.toml's rpc says


@dataclass(frozen=True)
class EngineFlags:
    """The engine options as typed (None: not given, config.toml's value applies)."""

    draft: str | None = None
    draft_max: int | None = None
    draft_min: int | None = None
    flash_attn: str | None = None
    kv_type: str | None = None
    rpc: tuple[str, ...] | None = None

    def local_only(self) -> dict[str, Any]:
        """The flags by their option names, for refusing them with --endpoint."""
        return {"--draft": self.draft, "--draft-max": self.draft_max,
                "--draft-min": self.draft_min, "--flash-attn": self.flash_attn,
                "--kv-type": self.kv_type, "--rpc": self.rpc}

    def typed_settings(self) -> dict[str, Any]:
        """The flags given, by their Settings field names."""
        typed = {"draft_model": self.draft, "draft_max": self.draft_max,
                 "draft_min": self.draft_min, "flash_attn": self.flash_attn,
                 "kv_type": self.kv_type, "rpc": self.rpc}
        return {name: value for name, value in typed.items() if value is not None}

    def settings_over(self, settings: Settings) -> Settings:
        """`settings` with the typed flags in place of config.toml's values."""
        from dataclasses import replace

        return replace(settings, **self.typed_settings())

    def engine_overrides(self, settings: Settings, models_dir: Path) -> dict[str, Any]:
        """EngineConfig.from_settings keyword arguments: the typed flags, and the draft
        (typed, else config.toml's draft_model) resolved like --model. One-line errors for a
        draft that is not there and for --draft-min above --draft-max."""
        from localr1.models.decode_options import resolve_draft

        merged = self.settings_over(settings)
        if merged.draft_min > merged.draft_max:
            raise click.UsageError(f"--draft-min ({merged.draft_min}) is above --draft-max "
                                   f"({merged.draft_max})")
        return {"draft": resolve_draft(merged.draft_model, models_dir),
                "draft_max": merged.draft_max, "draft_min": merged.draft_min,
                "flash_attn": merged.flash_attn, "kv_type": merged.kv_type, "rpc": merged.rpc}


_NAMES = ("draft", "draft_max", "draft_min", "flash_attn", "kv_type", "rpc")


def check_rpc(_ctx: click.Context, _param: click.Parameter, value: str | None):
    """`--rpc a:1,b:2` as the rpc setting's tuple, checked like config.toml's `rpc`; `--rpc
    none` as no workers (an empty tuple: it wins over config's, as `--draft none` does)."""
    if value is None:
        return None
    if value.strip().lower() == NO_RPC:
        return ()
    from localr1.config import checked_setting

    try:
        return checked_setting("rpc", [part.strip() for part in value.split(",")])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None  # it names the bad worker


def engine_options(command: F) -> F:
    """--draft, --draft-max, --draft-min, --flash-attn, --kv-type and --rpc, handed to the
    command as `engine_flags`."""

    @functools.wraps(command)
    def with_flags(*args: Any, **kwargs: Any) -> Any:
        flags = EngineFlags(**{name: kwargs.pop(name) for name in _NAMES})
        return command(*args, engine_flags=flags, **kwargs)

    options = (
        click.option("--draft", metavar="MODEL", callback=setting_check("draft_model"),
                     help="Speculative decoding: a small model that drafts tokens the model "
                          "checks in one pass (a name or .gguf path, like --model), `lookup` "
                          "(drafts from text already in the context) or `none` (default: "
                          "config's draft_model)."),
        click.option("--draft-max", type=click.IntRange(1, 256),
                     callback=setting_check("draft_max"),
                     help="Most tokens drafted per step (default 16)."),
        click.option("--draft-min", type=click.IntRange(0, 256),
                     callback=setting_check("draft_min"),
                     help="Fewer drafted tokens than this are not checked (default 0)."),
        click.option("--flash-attn", type=click.Choice(FLASH_ATTN_CHOICES),
                     callback=setting_check("flash_attn"),
                     help="llama.cpp's flash attention (default auto: where supported)."),
        click.option("--kv-type", type=click.Choice(KV_TYPES), callback=setting_check("kv_type"),
                     help="The KV cache's element type: q8_0 about halves its memory, q4_0 "
                          "quarters it (quantized needs flash attention; default f16)."),
        click.option("--rpc", metavar="HOST:PORT[,HOST:PORT...]", callback=check_rpc,
                     help="Split the model's layers between this machine and these `localr1 "
                          "worker`s, by free memory (--gpu-layers N: N layers to the workers; "
                          "default: config's rpc), or `none` (this machine only)."),
    )
    for option in reversed(options):
        with_flags = option(with_flags)
    return with_flags  # type: ignore[return-value]
