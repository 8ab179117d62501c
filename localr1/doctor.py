"""`localr1 doctor`'s checks: what this install can do, what is broken, and how to fix it.

Each check is data (`Check`); cli/doctor.py prints them. The default model and `--model` are
chosen by models.choice, like `run` chooses them.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from localr1 import __version__
from localr1.config import Settings
from localr1.errors import LocalR1Error
from localr1.paths import AppPaths

Status = Literal["ok", "warn", "fail"]

REBUILD = 'CMAKE_ARGS="{flag}" pip install --force-reinstall --no-cache-dir llama-cpp-python'


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    advice: str | None = None


def run_checks(paths: AppPaths, *, model_given: bool = False) -> list[Check]:
    """The install checks; `model_given`: doctor was asked to test a model by name, so a
    missing default model is nothing to warn about."""
    checks = [
        Check("localr1", "ok", f"{__version__} (Python {platform.python_version()}, "
                               f"{platform.system()} {platform.machine()})"),
    ]
    llama = _check_llama_cpp()
    checks.append(llama)
    if llama.status != "fail":
        checks.extend(_check_backend())
        checks.append(_check_rpc())
    checks.append(_check_memory())
    checks.extend(_check_paths(paths))
    settings_check, settings = _check_config(paths)
    checks.append(settings_check)
    checks.append(_check_threads(settings or Settings(), openmp=_uses_openmp(llama)))
    checks.append(_check_default_model(settings or Settings(), paths, model_given))
    return checks


def _check_llama_cpp() -> Check:
    try:
        import llama_cpp
    except Exception as exc:  # a broken shared library raises OSError, RuntimeError, ...
        return Check("llama-cpp-python", "fail", f"cannot import: {exc}",
                     "pip install --force-reinstall llama-cpp-python")
    return Check("llama-cpp-python", "ok",
                 f"{llama_cpp.__version__} at {Path(llama_cpp.__file__).parent}")


def _check_backend() -> list[Check]:
    from localr1.models import hardware
    from localr1.sizes import format_bytes

    backend = hardware.backend_info()
    features = _cpu_features(backend.system_info)
    checks = [Check("llama.cpp build", "ok", f"{_llama_cpp_version()}; backend {backend.name}; "
                                             f"CPU features: {features}")]
    gpu_hardware, flag = _gpu_hardware()
    if backend.can_offload:
        free = hardware.gpu_free_bytes(backend)
        free_text = "unknown free VRAM" if free is None else \
            f"{format_bytes(free)} free for offload"
        checks.append(Check("GPU offload", "ok", f"{backend.name}, {free_text}"))
    elif gpu_hardware:
        checks.append(Check(
            "GPU offload", "warn",
            f"this machine has {gpu_hardware} but this llama-cpp-python build is CPU-only",
            f"rebuild with GPU support: {REBUILD.format(flag=flag)}"))
    else:
        checks.append(Check("GPU offload", "ok", "none (CPU only; no supported GPU found)"))
    return checks


def _check_rpc() -> Check:
    """Whether `localr1 worker` and `--rpc` can work: llama.cpp's RPC backend is a build option."""
    from localr1.engine import rpc_backend

    problem = rpc_backend.rpc_problem()
    if problem is None:
        return Check("RPC", "ok", "yes (localr1 worker and --rpc can split a model over machines)")
    return Check("RPC", "warn", f"no: {problem} (localr1 worker and --rpc need it)",
                 f"rebuild with RPC: {rpc_backend.reinstall_command()}")


def _llama_cpp_version() -> str:
    import llama_cpp

    version_of = getattr(llama_cpp, "llama_version", None)  # newer bindings only
    if version_of is None:
        return "llama.cpp (version not reported)"
    return f"llama.cpp {version_of().decode('utf-8', 'replace')}"


def _cpu_features(system_info: str) -> str:
    names = ("AVX", "AVX2", "AVX512", "FMA", "F16C", "NEON", "ARM_FMA", "SVE")
    enabled = [part.split("=")[0].strip() for part in system_info.replace("|", "\n").splitlines()
               if part.strip().endswith("= 1") and part.split("=")[0].strip() in names]
    return ", ".join(enabled) or "baseline"


def _gpu_hardware() -> tuple[str | None, str]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "an Apple Silicon GPU", "-DGGML_METAL=on"
    if shutil.which("nvidia-smi") or Path("/proc/driver/nvidia").exists():
        return "an NVIDIA GPU", "-DGGML_CUDA=on"
    if Path("/dev/kfd").exists():
        return "an AMD GPU (ROCm)", "-DGGML_HIP=on"
    if shutil.which("vulkaninfo"):
        return "a Vulkan GPU", "-DGGML_VULKAN=on"
    return None, ""


def _check_memory() -> Check:
    from localr1.models.hardware import memory_info
    from localr1.sizes import format_bytes

    mem = memory_info()
    return Check("memory", "ok", f"{format_bytes(mem.total_bytes)} RAM, "
                                 f"{format_bytes(mem.available_bytes)} free")


def _uses_openmp(llama: Check) -> bool:
    if llama.status == "fail":
        return False
    from localr1.models.hardware import backend_info

    return "OPENMP = 1" in backend_info().system_info


def _check_threads(settings: Settings, *, openmp: bool) -> Check:
    """The thread count a model would load with now, and why (other load is measured)."""
    from localr1.engine.thread_policy import choose_threads, wait_policy

    choice = choose_threads(settings.threads)
    return Check("threads", "ok", f"{choice.reason}; {wait_policy(openmp)}")


def _check_paths(paths: AppPaths) -> list[Check]:
    checks = []
    for label, path in (("config file", paths.config_file), ("models folder", paths.models_dir),
                        ("database", paths.db_path)):
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        writable = existing is not None and os.access(existing if existing.is_dir()
                                                      else existing.parent, os.W_OK)
        state = "exists" if path.exists() else "not created yet"
        if writable:
            checks.append(Check(label, "ok", f"{path} ({state})"))
        else:
            checks.append(Check(label, "fail", f"{path} is not writable",
                                "fix the permissions or set LOCALR1_HOME to a writable folder"))
    return checks


def _check_config(paths: AppPaths) -> tuple[Check, Settings | None]:
    from localr1.config import load_settings

    try:
        settings = load_settings(paths.config_file)
    except LocalR1Error as exc:
        return Check("config", "fail", str(exc), "fix the file (localr1 config path)"), None
    source = "defaults" if not paths.config_file.exists() else str(paths.config_file)
    return Check("config", "ok", f"read from {source}"), settings


def _check_default_model(settings: Settings, paths: AppPaths, model_given: bool) -> Check:
    if not settings.default_model and model_given:
        return Check("default model", "ok", "none set (--model given)")
    if not settings.default_model:
        return Check("default model", "warn", "none set",
                     "set default_model in config.toml, or pass --model to run")
    from localr1.models.choice import choose_model
    from localr1.models.gguf_header import read_gguf_header

    try:
        chosen = choose_model(None, settings, paths)
        header = read_gguf_header(chosen.path)
    except LocalR1Error as exc:
        return Check("default model", "fail", str(exc),
                     "fix default_model in config.toml (localr1 config path)")
    return Check("default model", "ok",
                 f"{chosen.name}: {header.architecture}, {header.file_type or 'unknown quant'}")


def check_model_runs(reference: str, paths: AppPaths,
                     typed_settings: dict[str, Any] | None = None) -> Check:
    """Load a model the way `run` does and decode a few tokens: proves offload really works.
    `typed_settings`: command-line values (--draft, --kv-type...) over config.toml's."""
    from dataclasses import replace

    from localr1.chat_message import ChatMessage
    from localr1.config import load_settings
    from localr1.engine.llama_engine import Engine, EngineConfig, GenerationParams
    from localr1.models.choice import choose_model
    from localr1.models.decode_options import resolve_draft

    try:
        settings = replace(load_settings(paths.config_file), **(typed_settings or {}))
        chosen = choose_model(reference, settings, paths)
        draft = resolve_draft(settings.draft_model, paths.models_dir)
        with Engine.load(EngineConfig.from_settings(chosen.path, settings,
                                                    draft=draft)) as engine:
            events = list(engine.stream_chat([ChatMessage("user", "Say OK.")],
                                             GenerationParams(max_tokens=8, seed=0)))
    except LocalR1Error as exc:
        return Check("model test", "fail", str(exc))
    stats = events[-1].stats
    info = engine.info
    return Check("model test", "ok",
                 f"{chosen.name}: runs on {info.placement}, {stats.completion_tokens} tokens "
                 f"at {stats.tokens_per_second:.1f} tokens/s, context {info.n_ctx}")
