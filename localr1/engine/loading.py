"""Getting a GGUF into llama.cpp: its parts' headers, the context size, the up-front memory
check and the load itself, with llama.cpp's own error lines turned into one clear message.

The KV-cache options (flash_attn "auto"|"on"|"off", kv_type "f16"|"q8_0"|"q4_0") go into the
context params. llama.cpp (src/llama-context.cpp, llama_init_from_model) turns "auto" into "on"
for a quantized V cache and refuses one with flash attention off, and a quantized K or V cache
whose head size is not a multiple of the 32-element block; `check_kv_options` says so in one
line before anything loads, and `load_llama` turns what llama.cpp refuses anyway into one line.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from localr1.engine import ggml_abort, llama_log
from localr1.engine.chat_template import check_gguf_templates
from localr1.engine.split_memory import SplitMemory, this_machine_bytes
from localr1.errors import ChatFormatError, InsufficientMemoryError, ModelLoadError
from localr1.models import hardware
from localr1.models.gguf_header import GGUFHeader, read_gguf_header
from localr1.models.library import validate_gguf
from localr1.models.split_names import part_paths
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    import llama_cpp

# Elements per block of ggml's quantized types: a head size must be a multiple of it.
_KV_BLOCK_SIZE = {"f16": 1, "q8_0": 32, "q4_0": 32}


def context_size(requested: int, trained: int | None) -> int:
    return min(requested, trained) if trained else requested


def read_model_headers(path: Path) -> list[GGUFHeader]:
    """The header of each file of the GGUF at `path`: its own, or every part's of a split GGUF
    (split.count above 1), found and checked as the models folder finds them; llama.cpp loads
    the later parts from beside the first by the same names. Read before llama.cpp, which may
    abort on a bad file."""
    first = read_gguf_header(path)
    if first.split_count <= 1:
        return [first]
    return validate_gguf(part_paths(path))


def check_memory(path: Path, estimate: hardware.MemoryEstimate, gpu_layers: int,
                 n_ctx: int, *, draft: hardware.MemoryEstimate | None = None,
                 kv_type: str = "f16") -> None:
    """Refuse, in one line, a model (and its draft: `hardware.draft_estimate`, offloaded like
    the model) that free RAM cannot hold. `estimate` is in `kv_type` already; it is named in
    the message. A split over RPC workers is check_split_memory's."""
    total_layers = estimate.n_layers + 1
    on_cpu_share = 1.0 - min(gpu_layers, total_layers) / total_layers
    needed = this_machine_bytes(estimate, on_cpu_share, draft, on_cpu_share)
    available = hardware.memory_info().available_bytes
    if needed > available:
        _refuse_ram(path, needed, available, estimate, n_ctx, draft, kv_type)


def check_split_memory(path: Path, planned: SplitMemory, estimate: hardware.MemoryEstimate,
                       n_ctx: int, *, draft: hardware.MemoryEstimate | None = None,
                       kv_type: str = "f16") -> None:
    """Refuse, in one line, a split over RPC workers (split_memory.plan_split_memory, the
    fit labels' own figures) that this machine or a worker cannot hold."""
    if not planned.fits_here:
        _refuse_ram(path, planned.local_bytes, planned.local_free, estimate, n_ctx, draft,
                    kv_type)
    overfull = next(planned.overfull_devices(), None)
    if overfull is not None:
        label, layers, needed, free = overfull
        raise InsufficientMemoryError(
            f"{path.name}: {label} would hold {layers} layers (about {format_bytes(needed)}) "
            f"but has only {format_bytes(free)} free; use a smaller --gpu-layers, a smaller "
            f"quant or a smaller --ctx")


def _refuse_ram(path: Path, needed: int, available: int, estimate: hardware.MemoryEstimate,
                n_ctx: int, draft: hardware.MemoryEstimate | None, kv_type: str) -> None:
    fmt = format_bytes
    kv = "" if kv_type == "f16" else f" {kv_type}"
    draft_bytes = draft.weights_bytes + draft.kv_cache_bytes if draft else 0
    with_draft = f" + draft {fmt(draft_bytes)}" if draft else ""
    hints = ["a smaller quant", "a smaller --ctx"]
    hints += ["--kv-type q8_0"] if kv_type == "f16" else []
    hints += ["no --draft"] if draft else []
    raise InsufficientMemoryError(
        f"{path.name} needs about {fmt(needed)} of RAM (weights {fmt(estimate.weights_bytes)}"
        f" + KV cache{kv} {fmt(estimate.kv_cache_bytes)} at --ctx {n_ctx}{with_draft}) but "
        f"only {fmt(available)} is free; use {', '.join(hints[:-1])} or {hints[-1]}"
    )


def check_kv_options(path: Path, header: GGUFHeader, flash_attn: str, kv_type: str) -> None:
    """What llama.cpp would refuse about these KV-cache options, in one line, before loading."""
    if kv_type == "f16":
        return
    if flash_attn == "off":
        raise ModelLoadError(f"{path.name}: a {kv_type} KV cache needs flash attention; use "
                             f"--flash-attn on or auto, or --kv-type f16")
    block = _KV_BLOCK_SIZE[kv_type]
    for what, size in (("key", header.key_length), ("value", header.value_length)):
        if size and size % block:
            raise ModelLoadError(f"{path.name}: a {kv_type} KV cache needs a head size that is "
                                 f"a multiple of {block}, and this model's {what} heads have "
                                 f"{size}; use --kv-type f16")


def apply_kv_options(context_params: llama_cpp.llama_context_params, flash_attn: str,
                     kv_type: str) -> None:
    """Set flash attention ("auto"|"on"|"off") and the K and V cache type (config.KV_TYPES)
    on raw llama.cpp context params."""
    import llama_cpp

    context_params.flash_attn_type = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
                                      "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                                      "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}[flash_attn]
    ggml_type = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
                 "q4_0": llama_cpp.GGML_TYPE_Q4_0}[kv_type]
    context_params.type_k = ggml_type
    context_params.type_v = ggml_type


def new_sequences_context(model: llama_cpp.llama_model_p, n_seq: int, n_ctx_per_sequence: int,
                          n_batch: int, threads: int, flash_attn: str, kv_type: str):
    """A llama_context for `n_seq` sequences of `n_ctx_per_sequence` cells each (not unified),
    or None when llama.cpp cannot make it. The caller frees it (llama_free)."""
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx_per_sequence * n_seq
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = n_seq
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = False  # each sequence gets its own n_ctx_per_sequence cells
    apply_kv_options(params, flash_attn, kv_type)
    return llama_cpp.llama_init_from_model(model, params) or None


@functools.cache
def _llama_class() -> type[llama_cpp.Llama]:
    """llama_cpp.Llama with our KV options: its own flash_attn is a bool (no "auto"), so they
    are applied to its context params each time it reads them, the last time being when
    llama.cpp makes the context."""
    import llama_cpp

    class KvOptionsLlama(llama_cpp.Llama):
        def __init__(self, *args, kv_options: tuple[str, str], **kwargs) -> None:
            self._kv_options = kv_options
            super().__init__(*args, **kwargs)

        @property
        def context_params(self) -> llama_cpp.llama_context_params:
            apply_kv_options(self._context_params, *self._kv_options)
            return self._context_params

        @context_params.setter
        def context_params(self, params: llama_cpp.llama_context_params) -> None:
            self._context_params = params

    return KvOptionsLlama


def load_llama(path: Path, header: GGUFHeader, n_ctx: int, gpu_layers: int,
               threads: int, *, flash_attn: str = "auto", kv_type: str = "f16",
               tensor_split: tuple[float, ...] | None = None) -> llama_cpp.Llama:
    check_gguf_templates(header.metadata)  # llama-cpp-python compiles them in Llama()
    check_kv_options(path, header, flash_attn, kv_type)
    llama_log.install()
    ggml_abort.install()  # a GGML assert we did not foresee: one line, not a silent SIGABRT
    llama_log.take_errors()
    try:
        return _llama_class()(
            model_path=str(path), n_ctx=n_ctx, n_gpu_layers=gpu_layers, n_threads=threads,
            n_threads_batch=threads, verbose=False, kv_options=(flash_attn, kv_type),
            tensor_split=list(tensor_split) if tensor_split else None,  # RPC: rpc_split's
            # We render prompts ourselves; a placeholder format stops llama-cpp-python from
            # guessing one (and logging about it).
            chat_format="chatml",
        )
    except ValueError as exc:
        errors = llama_log.take_errors()
        if kv_type != "f16" and any("flash_attn" in line or "Flash Attention" in line
                                    for line in errors):
            raise ModelLoadError(
                f"{path.name}: llama.cpp cannot use flash attention with this model here, and "
                f"a {kv_type} KV cache needs it; use --kv-type f16") from None
        detail = llama_log.load_failure_detail(errors) or str(exc)
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
