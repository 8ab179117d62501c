"""Will this model run here? A fit label from its size, its KV cache, and free RAM / VRAM.

needed = weights (the GGUF's tensor data, or the catalog's approximate file size before a
download) + the f16 KV cache for the default context (layers x context x KV heads x head dim,
from the GGUF header or from models.toml) + llama.cpp's compute allowance (hardware.py). Then:

* "fits in GPU"                 a GPU backend, and needed <= free VRAM;
* "partial GPU offload"         a GPU backend, needed <= free VRAM + available RAM (also when
                                the backend cannot tell its free VRAM);
* "CPU only, fits in RAM"       no GPU offload (or no VRAM to speak of), needed <= available RAM;
* "too large for this machine"  otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from localr1.models import hardware
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    from localr1.models.catalog import CatalogEntry, CatalogModel
    from localr1.models.hub_resolve import PullPlan
    from localr1.models.registry import GGUFSummary

FITS_IN_GPU = "fits in GPU"
PARTIAL_OFFLOAD = "partial GPU offload"
CPU_IN_RAM = "CPU only, fits in RAM"
TOO_LARGE = "too large for this machine"
FIT_LABELS = (FITS_IN_GPU, PARTIAL_OFFLOAD, CPU_IN_RAM, TOO_LARGE)  # best first


@dataclass(frozen=True)
class MachineMemory:
    ram_available: int
    ram_total: int
    can_offload: bool
    vram_free: int | None  # None: a GPU backend that cannot tell (e.g. Vulkan)
    backend: str


@dataclass(frozen=True)
class ModelShape:
    """The numbers the estimate needs; KV fields are None when unknown."""

    weights_bytes: int
    n_layers: int | None
    n_kv_heads: int | None
    key_length: int | None
    value_length: int | None
    context_length: int | None  # the model's training context (caps the default context)


@dataclass(frozen=True)
class Fit:
    label: str
    needed_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    n_ctx: int
    kv_known: bool

    @property
    def runs(self) -> bool:
        return self.label != TOO_LARGE


def machine_memory() -> MachineMemory:
    """This machine now (imports llama_cpp to learn the GPU backend)."""
    memory = hardware.memory_info()
    backend = hardware.backend_info()
    vram = hardware.gpu_free_bytes(backend) if backend.can_offload else 0
    return MachineMemory(memory.available_bytes, memory.total_bytes, backend.can_offload, vram,
                         backend.name)


def shape_from_summary(summary: GGUFSummary) -> ModelShape:
    return ModelShape(summary.weights_bytes, summary.n_layers, summary.n_kv_heads,
                      summary.key_length, summary.value_length, summary.context_length)


def shape_from_catalog(model: CatalogModel, size_bytes: int) -> ModelShape:
    return ModelShape(size_bytes, model.n_layers, model.n_kv_heads, model.head_dim,
                      model.head_dim, model.context_length)


def assess(shape: ModelShape, n_ctx: int, machine: MachineMemory) -> Fit:
    if shape.context_length:
        n_ctx = min(n_ctx, shape.context_length)
    kv_known = bool(shape.n_layers and shape.n_kv_heads and shape.key_length)
    if kv_known:
        estimate = hardware.estimate_memory_for_shape(
            shape.weights_bytes, shape.n_layers, shape.n_kv_heads, shape.key_length,
            shape.value_length or shape.key_length, n_ctx)
    else:
        estimate = hardware.estimate_memory_for_shape(shape.weights_bytes, 1, 0, 0, 0, n_ctx)
    needed = estimate.total_bytes
    return Fit(_label(needed, machine), needed, shape.weights_bytes, estimate.kv_cache_bytes,
               n_ctx, kv_known)


def _label(needed: int, machine: MachineMemory) -> str:
    if machine.can_offload and machine.vram_free is None:
        return PARTIAL_OFFLOAD if needed <= machine.ram_available else TOO_LARGE
    vram = (machine.vram_free or 0) if machine.can_offload else 0
    if vram and needed <= vram:
        return FITS_IN_GPU
    if vram and needed <= vram + machine.ram_available:
        return PARTIAL_OFFLOAD
    if needed <= machine.ram_available:
        return CPU_IN_RAM
    return TOO_LARGE


def default_context_size() -> int:
    """The context the fit is estimated for: config.toml's context_size (default 8192)."""
    from localr1.config import load_settings
    from localr1.paths import app_paths

    return load_settings(app_paths().config_file).context_size


def plan_fit(plan: PullPlan, machine: MachineMemory) -> Fit:
    """The fit of a model about to be pulled: catalog facts when it is a catalog entry, the
    download size alone otherwise (its KV cache is unknown until the header is read)."""
    entry = plan.catalog_entry
    shape = shape_from_catalog(entry.model, plan.size_bytes) if entry else \
        ModelShape(plan.size_bytes, None, None, None, None, None)
    return assess(shape, default_context_size(), machine)


def fit_text(fit: Fit) -> str:
    """E.g. "CPU only, fits in RAM (needs about 1.4 GB: weights, KV cache for 8192 tokens)"."""
    kv = f"KV cache for {fit.n_ctx} tokens" if fit.kv_known else \
        "KV cache unknown until downloaded"
    return f"{fit.label} (needs about {format_bytes(fit.needed_bytes)}: weights, {kv})"


def assess_catalog_entry(entry: CatalogEntry, n_ctx: int, machine: MachineMemory) -> Fit:
    return assess(shape_from_catalog(entry.model, entry.size_bytes), n_ctx, machine)


def recommended_entries(entries: list[CatalogEntry], n_ctx: int,
                        machine: MachineMemory) -> set[str]:
    """Per model, the quant to suggest here: the largest that runs fully on the GPU; failing
    that, the catalog's default quant if it runs at all. Names of the chosen entries."""
    chosen: set[str] = set()
    by_model: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        by_model.setdefault(entry.model.name, []).append(entry)
    for model_entries in by_model.values():
        fits = {e.name: assess_catalog_entry(e, n_ctx, machine) for e in model_entries}
        on_gpu = [e for e in model_entries if fits[e.name].label == FITS_IN_GPU]
        if on_gpu:
            chosen.add(max(on_gpu, key=lambda e: e.size_bytes).name)
            continue
        default = next((e for e in model_entries if e.is_default_quant), None)
        if default is not None and fits[default.name].runs:
            chosen.add(default.name)
    return chosen
