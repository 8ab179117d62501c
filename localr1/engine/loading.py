"""Getting a GGUF into llama.cpp: the context size, the up-front memory check and the load
itself, with llama.cpp's own error lines turned into one clear message."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from localr1.engine import ggml_abort, llama_log
from localr1.engine.chat_template import check_gguf_templates
from localr1.errors import ChatFormatError, InsufficientMemoryError, ModelLoadError
from localr1.models import hardware
from localr1.models.gguf_header import GGUFHeader
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    import llama_cpp


def context_size(requested: int, trained: int | None) -> int:
    return min(requested, trained) if trained else requested


def check_memory(path: Path, estimate: hardware.MemoryEstimate, gpu_layers: int,
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


def load_llama(path: Path, header: GGUFHeader, n_ctx: int, gpu_layers: int,
               threads: int) -> llama_cpp.Llama:
    import llama_cpp

    check_gguf_templates(header.metadata)  # llama-cpp-python compiles them in Llama()
    llama_log.install()
    ggml_abort.install()  # a GGML assert we did not foresee: one line, not a silent SIGABRT
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
        detail = llama_log.load_failure_detail(llama_log.take_errors()) or str(exc)
        arch = header.architecture or "unknown"
        hint = "; this llama-cpp-python build may not support it (pip install -U " \
            "llama-cpp-python)" if "architecture" in detail else ""
        raise ModelLoadError(
            f"{path.name}: llama.cpp could not load this model (architecture '{arch}'): "
            f"{detail.strip()}{hint}"
        ) from None


def format_note_from_file(path: Path, header: GGUFHeader,
                          requested: str | None = None) -> str | None:
    """What `ModelInfo.format_note` will say for this GGUF, without loading its weights (for
    `show`): only its vocabulary goes into llama.cpp, to see which format it suggests.
    `requested`: the chat_format `run` would ask for (config.toml's), resolved the same way."""
    if header.chat_template and not requested:
        return None
    import llama_cpp

    from localr1.engine.chat_format import resolve_chat_format

    llama_log.install()
    try:
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except ValueError:
        llama_log.take_errors()
        return None  # `run` would say why it cannot load it
    try:
        return resolve_chat_format(llm, requested, header.architecture, path.name).note
    except ChatFormatError as exc:
        return str(exc)  # no format to guess: the note says what to pass instead
    finally:
        llm.close()
