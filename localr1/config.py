"""The user's config.toml, read once into one typed, frozen Settings object.

Every mistake a user can make in the file (bad TOML, unknown key, wrong type, out-of-range
value) becomes a ConfigError whose message is `file:line:column: what is wrong`.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from localr1.errors import ConfigError
from localr1.rpc_endpoints import WorkerError, parse_endpoints
from localr1.whole_file import replace_text

# DeepSeek's recommendation for R1 and its distills: temperature 0.6, top_p 0.95, nothing else.
# top_k and min_p are written out (and disabled) so llama.cpp's generic defaults
# (top_k 40, min_p 0.05) never slip in.
R1_TEMPERATURE = 0.6
R1_TOP_P = 0.95
# Seconds a decode of a few tokens may wait on silent RPC workers (engine.rpc_watchdog).
DEFAULT_RPC_TIMEOUT = 30.0


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off
    repeat_penalty: float = 1.0  # 1 = off
    seed: int | None = None  # None = a new random seed per turn


@dataclass(frozen=True)
class Settings:
    default_model: str | None = None
    context_size: int = 8192
    max_tokens: int = 0  # 0 = until the context window is full
    gpu_layers: int | str = "auto"  # "auto", -1 (all), 0 (CPU) or a layer count
    threads: int = 0  # 0 = one per physical core (estimated)
    reasoning_budget: int = -1  # -1 = unlimited
    chat_format: str | None = None  # None = the template in the GGUF
    flash_attn: str = "auto"  # "auto" | "on" | "off" (llama.cpp's flash attention)
    kv_type: str = "f16"  # the KV cache's element type: "f16" | "q8_0" | "q4_0"
    draft_model: str | None = None  # a model name, GGUF path or "lookup" (speculative decoding)
    draft_max: int = 16  # tokens drafted per step at most (llama.cpp's --draft-max)
    draft_min: int = 0  # fewer drafted tokens than this are not worth a target pass
    rpc: tuple[str, ...] = ()  # "host:port" of `localr1 worker`s that take part of the layers
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT  # silent RPC workers end a decode after it
    sampling: SamplingSettings = field(default_factory=SamplingSettings)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_settings(path: Path) -> Settings:
    """Settings from `path`; defaults when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, text, exc)) from None
    return _settings_from_mapping(data, path, text)


_DEFAULT_MODEL_LINE = re.compile(r"""^\s*["']?default_model["']?\s*=""")


def set_default_model(path: Path, name: str) -> None:
    """Write `default_model = "name"` into config.toml, keeping every other line (comments
    included) as it is; the file is replaced atomically and only if the result still reads
    as a valid config."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    load_settings(path)  # a broken file is reported, never rewritten
    lines = old.splitlines(keepends=True)
    new_line = f"default_model = {json.dumps(name)}\n"  # a JSON string is a TOML string
    top_level_end = next((i for i, line in enumerate(lines)
                          if line.lstrip().startswith("[")), len(lines))
    found = next((i for i in range(top_level_end) if _DEFAULT_MODEL_LINE.match(lines[i])), None)
    if found is not None:
        lines[found] = new_line
    else:  # after the last top-level line, before the blank lines ahead of the first [table]
        at = top_level_end
        while at and not lines[at - 1].strip():
            at -= 1
        if at and not lines[at - 1].endswith("\n"):
            lines[at - 1] += "\n"
        blank = ["\n"] if at == top_level_end < len(lines) else []
        lines[at:at] = [new_line, *blank]
    text = "".join(lines)
    try:
        written = _settings_from_mapping(tomllib.loads(text), path, text)
    except (tomllib.TOMLDecodeError, ConfigError):
        written = None
    if written is None or written.default_model != name:
        raise ConfigError(f"{path}: could not set default_model automatically; "
                          f"add the line default_model = {json.dumps(name)} by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        replace_text(path, text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write config: {exc}") from None


def toml_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, compiler style: "file:line:column: what" (config and catalog)."""
    # tomllib says "... (at line 3, column 7)"; move the position to the front.
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        return f"{path}:{match[1]}:{match[2]}: {message[: match.start()]}"
    match = re.search(r"\s*\(at end of document\)$", message)
    if match:
        return f"{path}:{text.count(chr(10)) + 1}:1: {message[: match.start()]} (at end of file)"
    return f"{path}:1:1: {message}"


def _settings_from_mapping(data: dict[str, Any], path: Path, text: str) -> Settings:
    def fail(key: str, section: str | None, problem: str) -> ConfigError:
        line, column = _locate_key(text, key, section)
        return ConfigError(f"{path}:{line}:{column}: {problem}")

    sampling_data = data.pop("sampling", {})
    if not isinstance(sampling_data, dict):
        raise fail("sampling", None, "'sampling' must be a table ([sampling])")
    top = _typed_values(Settings, data, None, fail)
    sampling = _typed_values(SamplingSettings, sampling_data, "sampling", fail)
    return replace(Settings(**top), sampling=SamplingSettings(**sampling))


_TYPES: dict[str, tuple[type, ...]] = {
    "default_model": (str,),
    "chat_format": (str,),
    "context_size": (int,),
    "max_tokens": (int,),
    "gpu_layers": (int, str),
    "threads": (int,),
    "reasoning_budget": (int,),
    "temperature": (float, int),
    "top_p": (float, int),
    "top_k": (int,),
    "min_p": (float, int),
    "repeat_penalty": (float, int),
    "seed": (int,),
    "flash_attn": (str,),
    "kv_type": (str,),
    "draft_model": (str,),
    "draft_max": (int,),
    "draft_min": (int,),
    "rpc": (list, tuple),
    "rpc_timeout": (float, int),
}

# The KV cache element types offered (llama.cpp's GGML types; quantized V needs flash attention).
KV_TYPES = ("f16", "q8_0", "q4_0")

# llama.cpp takes these as 32-bit integers: bigger values would overflow in ctypes.
_INT32_MAX = 2**31 - 1

# NaN fails every comparison, so each float check below rejects it; inf is caught by the bounds.
_RANGES: dict[str, tuple[Any, str]] = {
    "context_size": (lambda v: 64 <= v <= _INT32_MAX, f"must be 64 to {_INT32_MAX}"),
    "max_tokens": (lambda v: 0 <= v <= _INT32_MAX, f"must be 0 (no limit) to {_INT32_MAX}"),
    "threads": (lambda v: 0 <= v <= 4096, "must be 0 (auto) to 4096"),
    "reasoning_budget": (lambda v: -1 <= v <= _INT32_MAX,
                         f"must be -1 (no limit) to {_INT32_MAX}"),
    "gpu_layers": (lambda v: v == "auto" or (isinstance(v, int) and -1 <= v <= _INT32_MAX),
                   "must be \"auto\", -1 (all layers), 0 (CPU only) or a layer count"),
    "temperature": (lambda v: 0.0 <= v <= 5.0, "must be between 0 and 5"),
    "top_p": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
    "top_k": (lambda v: 0 <= v <= _INT32_MAX, f"must be 0 (off) to {_INT32_MAX}"),
    "min_p": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "repeat_penalty": (lambda v: 0.0 < v < math.inf, "must be positive and finite"),
    "seed": (lambda v: 0 <= v <= 2**32 - 1, "must be 0 to 4294967295"),
    "flash_attn": (lambda v: v in ("auto", "on", "off"), 'must be "auto", "on" or "off"'),
    "kv_type": (lambda v: v in KV_TYPES, 'must be "f16", "q8_0" or "q4_0"'),
    "draft_model": (lambda v: bool(v.strip()), "must name a model, a GGUF path or \"lookup\""),
    "draft_max": (lambda v: 1 <= v <= 256, "must be 1 to 256"),
    "draft_min": (lambda v: 0 <= v <= 256, "must be 0 to 256"),
    "rpc_timeout": (lambda v: 1.0 <= v <= 86400.0, "must be 1 to 86400 seconds"),
}


def checked_setting(key: str, value: Any) -> Any:
    """`value` as the setting `key` (an int widened to float where a float is expected).

    Raises ValueError saying what is wrong (type or range). The one check behind config.toml,
    the command line's options and batch params.
    """
    expected = _TYPES[key]
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise ValueError(f"must be {names}, not {type(value).__name__}")
    if key == "rpc":
        return _checked_endpoints(value)
    test, problem = _RANGES.get(key, (lambda _: True, ""))
    if float in expected:
        try:
            value = float(value)
        except OverflowError:  # an integer too big for a float is out of every float range
            raise ValueError(problem) from None
    if not test(value):
        raise ValueError(problem)
    return value


def _checked_endpoints(value: list | tuple) -> tuple[str, ...]:
    """The workers as the RPC backend will take them (a tuple: Settings is frozen); an empty
    list is no workers."""
    if not value:
        return ()
    if not all(isinstance(item, str) for item in value):
        raise ValueError('must list workers as strings ("host:port")')
    try:
        return parse_endpoints(value)
    except WorkerError as exc:
        raise ValueError(str(exc)) from None


def _typed_values(cls: type, data: dict[str, Any], section: str | None, fail) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} - {"sampling"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            where = f"[{section}]" if section else "the top level"
            raise fail(key, section, f"unknown setting '{key}' in {where}; "
                       f"known: {', '.join(sorted(known))}")
        try:
            values[key] = checked_setting(key, value)
        except ValueError as exc:  # "'top_p' must be ...", "'rpc': a:b: the port must ..."
            glue = " " if str(exc).startswith("must") else ": "
            raise fail(key, section, f"'{key}'{glue}{exc}") from None
    return values


def parse_gpu_layers(text: str) -> int | str:
    """The command-line form of gpu_layers: 'auto', 'all', or an integer."""
    text = text.strip().lower()
    if text in ("auto", "all"):
        return -1 if text == "all" else "auto"
    return checked_setting("gpu_layers", int(text))


def _locate_key(text: str, key: str, section: str | None) -> tuple[int, int]:
    """1-based line and column of `key = ...` inside `[section]` (or the top level)."""
    current: str | None = None
    fallback = (1, 1)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header[1]
            if section is None and current == key:
                return number, line.index("[") + 1
            continue
        match = re.match(rf"\s*(?:{re.escape(section)}\.)?{re.escape(key)}\s*=", line) \
            if section else re.match(rf"\s*{re.escape(key)}\s*=", line)
        if match and (current == section or (section and current is None)):
            return number, len(line) - len(line.lstrip()) + 1
        if match and fallback == (1, 1):
            fallback = (number, len(line) - len(line.lstrip()) + 1)
    return fallback


def render_settings_toml(settings: Settings) -> str:
    """The effective settings written back as TOML (what `localr1 config show` prints)."""
    lines = []
    top = settings.as_dict()
    sampling = top.pop("sampling")
    for key, value in top.items():
        lines.append(_toml_line(key, value))
    lines.append("")
    lines.append("[sampling]")
    for key, value in sampling.items():
        lines.append(_toml_line(key, value))
    return "\n".join(lines) + "\n"


def _toml_line(key: str, value: Any) -> str:
    if value is None:
        return f"# {key} = (not set)"
    if isinstance(value, str):
        return f'{key} = "{value}"'
    if isinstance(value, tuple):
        return f"{key} = {json.dumps(list(value))}"  # a JSON list of strings is TOML
    return f"{key} = {value}"
