"""Will this model run here? A fit label from its size, its KV cache, and free RAM / VRAM.

needed = weights (the GGUF's tensor data, or the catalog's approximate file size before a
download) + the KV cache for the default context in config.toml's kv_type (layers x context x
KV heads x head dim, from the GGUF header or from models.toml) + llama.cpp's compute allowance
(hardware.py); with config.toml's draft_model installed, + the draft's own weights, KV cache and
allowance, and the label says "(with draft)". Then:

* "fits in GPU"                 a GPU backend, and needed <= free VRAM;
* "partial GPU offload"         a GPU backend, needed <= free VRAM + available RAM (also when
                                the backend cannot tell its free VRAM);
* "CPU only, fits in RAM"       no GPU offload (or no VRAM to speak of), needed <= available RAM;
* "too large for this machine"  otherwise.

With RPC workers (config.toml's `rpc`, or `--rpc` on `list` and `show`), their free memory
counts too: the layers are split between this machine's available RAM and the workers' devices
by the load's own figures (engine/split_memory.py, gpu_layers "auto": a draft stays wholly on
this machine), and the model fits when this machine holds its share, the whole draft and the
compute buffers, and each worker its layers: "fits (with 2 workers)", else "too large even
with 2 workers". The workers are asked in Python (rpc_backend.worker_memory: nothing
registered, at most WORKER_TIMEOUT); when one does not answer, the label is this machine's
alone, noted "workers unreachable: local only", or "workers busy: local only" when each that
failed took the connection but not the hello (llama.cpp's RPC server serves one client at a
time: a worker serving another localr1 is alive).

Beside the label, the estimated decode speed (`speed.py`), from the weights and the memory
bandwidth of where they run; recommendations skip models too slow to be usable. Split between
a GPU of unknown bandwidth (or RPC workers) and the CPU, the CPU-held part alone bounds the
speed: the estimate is then an upper one ("up to ~1.2 tok/s"), still enough to rule out a
model far too slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from localr1.models import hardware, speed
from localr1.rpc_endpoints import WorkerBusyError, WorkerError
from localr1.sizes import format_bytes

if TYPE_CHECKING:
    from localr1.engine.split_memory import SplitMemory
    from localr1.models.catalog import CatalogEntry, CatalogModel
    from localr1.models.hub_resolve import PullPlan
    from localr1.models.registry import GGUFSummary

FITS_IN_GPU = "fits in GPU"
PARTIAL_OFFLOAD = "partial GPU offload"
CPU_IN_RAM = "CPU only, fits in RAM"
FITS_WITH_WORKERS = "fits with RPC workers"
TOO_LARGE = "too large for this machine"  # with workers counted: too large even with them
FIT_LABELS = (FITS_IN_GPU, PARTIAL_OFFLOAD, CPU_IN_RAM, FITS_WITH_WORKERS, TOO_LARGE)  # best first

# How long a fit waits for the RPC workers' memory, all of them together: a listing must not
# hang on a worker that is down (a LAN worker answers in milliseconds).
WORKER_TIMEOUT = 2.0
# Layers to split by when the model's count is unknown (a download not in the catalog): fine
# enough that the split is about proportional to free memory.
_UNKNOWN_LAYERS = 100


@dataclass(frozen=True)
class RpcWorkers:
    """The RPC workers fits count, as they answered."""

    endpoints: tuple[str, ...]
    device_free: tuple[int, ...] = ()  # each worker device's free memory, llama.cpp's order
    problem: str | None = None  # why they are not counted: one line, which worker and what
    note: str | None = None  # that, short, for the labels: "workers unreachable: local only"

    @property
    def counted(self) -> bool:
        return self.problem is None and bool(self.device_free)

    @property
    def count_text(self) -> str:
        count = len(self.endpoints)
        return f"{count} worker{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class MachineMemory:
    ram_available: int
    ram_total: int
    can_offload: bool
    vram_free: int | None  # None: a GPU backend that cannot tell (e.g. Vulkan)
    backend: str
    cpu_bandwidth: float | None = None  # bytes/s; None: unknown (no speed estimates)
    gpu_bandwidth: float | None = None
    workers: RpcWorkers | None = None  # config.toml's rpc (or --rpc); None: none configured


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
class ConfiguredDraft:
    """config.toml's draft_model, installed: counted beside every model but itself."""

    shape: ModelShape
    model_name: str  # its installed name
    catalog_name: str | None  # its catalog entry ("r1:1.5b-q4_k_m"), if pulled from one


@dataclass(frozen=True)
class Fit:
    label: str
    needed_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    n_ctx: int
    kv_known: bool
    tokens_per_second: float | None = None  # estimated decode speed; None: unknown
    speed_is_upper_bound: bool = False  # from the CPU-held part alone (GPU or workers unknown)
    kv_type: str = "f16"
    draft_bytes: int = 0  # the configured draft model's share of needed_bytes; 0: none
    workers: RpcWorkers | None = None  # the RPC workers counted, or tried

    @property
    def runs(self) -> bool:
        return self.label != TOO_LARGE

    @property
    def label_text(self) -> str:
        """The label as shown: "CPU only, fits in RAM (with draft)" when a draft is counted,
        "fits (with 2 workers)" or "too large even with 2 workers" when workers are, and the
        local label with "(workers unreachable: local only)" when they could not be."""
        workers = self.workers
        if workers and workers.counted:
            if self.runs:
                return f"fits (with {workers.count_text}{' and draft' if self.draft_bytes else ''})"
            return f"too large even with {workers.count_text}" + \
                (" (with draft)" if self.draft_bytes else "")
        notes = (["with draft"] if self.draft_bytes else []) + \
            ([workers.note] if workers and workers.note else [])
        return f"{self.label} ({'; '.join(notes)})" if notes else self.label

    @property
    def speed_text(self) -> str:
        """"~12 tok/s", "up to ~1.2 tok/s" or "speed unknown"; "-" for a model too large."""
        if not self.runs:
            return "-"
        text = speed.speed_text(self.tokens_per_second)
        return f"up to {text}" if self.speed_is_upper_bound else text


def machine_memory(*, with_cpu_bandwidth: bool = True,
                   rpc: Sequence[str] | None = None) -> MachineMemory:
    """This machine now (imports llama_cpp to learn the GPU backend; the CPU's bandwidth is
    measured on the first call on a machine, then read from the cache folder; without
    `with_cpu_bandwidth` it is left unknown), and the RPC workers `rpc` (default: config's)."""
    from localr1.config import load_settings
    from localr1.models import bandwidth
    from localr1.paths import app_paths

    memory = hardware.memory_info()
    backend = hardware.backend_info()
    vram = hardware.gpu_free_bytes(backend) if backend.can_offload else 0
    paths = app_paths()
    settings = load_settings(paths.config_file)
    threads = settings.threads or None  # as llama.cpp will decode
    cpu = bandwidth.cpu_bandwidth(paths.cache_dir, threads) if with_cpu_bandwidth else None
    endpoints = tuple(settings.rpc if rpc is None else rpc)
    return MachineMemory(memory.available_bytes, memory.total_bytes, backend.can_offload, vram,
                         backend.name, cpu, bandwidth.gpu_bandwidth(backend),
                         rpc_workers(endpoints) if endpoints else None)


def rpc_workers(endpoints: Sequence[str]) -> RpcWorkers:
    """The workers' free memory, asked within WORKER_TIMEOUT without registering them (a
    listing never changes where this process's later loads offload). Each worker is asked on
    its own, so that one busy is not reported as down with another that is."""
    import concurrent.futures

    from localr1.engine import rpc_backend

    endpoints = tuple(endpoints)
    problem = rpc_backend.rpc_problem()
    if problem is not None:
        return RpcWorkers(endpoints, problem=f"{problem}; reinstall it with: "
                                             f"{rpc_backend.reinstall_command()}",
                          note="no RPC in this build: local only")

    def ask(endpoint: str) -> tuple[rpc_backend.WorkerDevice, ...] | WorkerError:
        try:
            return rpc_backend.worker_memory(endpoint, timeout=WORKER_TIMEOUT)
        except WorkerError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(endpoints), 1)) as pool:
        answers = list(pool.map(ask, endpoints))
    failed = [answer for answer in answers if isinstance(answer, WorkerError)]
    if failed:
        busy = sum(isinstance(exc, WorkerBusyError) for exc in failed)
        what = "busy" if busy == len(failed) else "busy or unreachable" if busy else \
            "unreachable"
        return RpcWorkers(endpoints, problem="; ".join(str(exc) for exc in failed),
                          note=f"workers {what}: local only")
    return RpcWorkers(endpoints, tuple(device.free_bytes for worker in answers
                                       for device in worker))


def shape_from_summary(summary: GGUFSummary) -> ModelShape:
    return ModelShape(summary.weights_bytes, summary.n_layers, summary.n_kv_heads,
                      summary.key_length, summary.value_length, summary.context_length)


def shape_from_catalog(model: CatalogModel, size_bytes: int) -> ModelShape:
    return ModelShape(size_bytes, model.n_layers, model.n_kv_heads, model.head_dim,
                      model.head_dim, model.context_length)


def assess(shape: ModelShape, n_ctx: int, machine: MachineMemory, *, kv_type: str = "f16",
           draft: ModelShape | None = None) -> Fit:
    """The fit of `shape` at `n_ctx` (capped at its training context) with a `kv_type` KV
    cache, and with `draft` loaded beside it (its KV cache at the same context)."""
    if shape.context_length:
        n_ctx = min(n_ctx, shape.context_length)
    kv_known = bool(shape.n_layers and shape.n_kv_heads and shape.key_length)
    estimate = _estimate(shape, n_ctx, kv_type)
    draft_estimate = _estimate(draft, n_ctx, kv_type) if draft else None
    draft_bytes = draft_estimate.total_bytes if draft_estimate else 0
    needed = estimate.total_bytes + draft_bytes
    workers = machine.workers
    if workers and workers.counted:
        planned = _split_with_workers(shape, estimate, draft_estimate, machine, workers)
        label = FITS_WITH_WORKERS if planned.fits else TOO_LARGE
        on_cpu = round(shape.weights_bytes * planned.split.cpu_layers / planned.split.total)
        tokens_per_second = speed.decode_tokens_per_second(on_cpu, machine.cpu_bandwidth) \
            if on_cpu and machine.cpu_bandwidth and label != TOO_LARGE else None
        return Fit(label, needed, shape.weights_bytes, estimate.kv_cache_bytes, n_ctx, kv_known,
                   tokens_per_second, tokens_per_second is not None, kv_type, draft_bytes,
                   workers)
    label = _label(needed, machine)
    tokens_per_second, upper_bound = _tokens_per_second(label, shape.weights_bytes, needed,
                                                        machine)
    return Fit(label, needed, shape.weights_bytes, estimate.kv_cache_bytes, n_ctx, kv_known,
               tokens_per_second, upper_bound, kv_type, draft_bytes, workers)


def _split_with_workers(shape: ModelShape, estimate: hardware.MemoryEstimate,
                        draft: hardware.MemoryEstimate | None, machine: MachineMemory,
                        workers: RpcWorkers) -> SplitMemory:
    """The split a load would make with the workers (and a local GPU after them, as the
    engine orders them), and what it asks of each side: the load's own figures
    (split_memory.plan_split_memory), so the label and the load's memory check agree."""
    from localr1.engine.rpc_split import SplitDevice
    from localr1.engine.split_memory import plan_split_memory

    devices = [SplitDevice(f"RPC {index}", free)
               for index, free in enumerate(workers.device_free)]
    if machine.can_offload:
        devices.append(SplitDevice(machine.backend, machine.vram_free or 0))
    layered = replace(estimate, n_layers=shape.n_layers or _UNKNOWN_LAYERS)
    return plan_split_memory(layered, "auto", machine.ram_available, devices, draft)


def _estimate(shape: ModelShape, n_ctx: int, kv_type: str) -> hardware.MemoryEstimate:
    if shape.n_layers and shape.n_kv_heads and shape.key_length:
        return hardware.estimate_memory_for_shape(
            shape.weights_bytes, shape.n_layers, shape.n_kv_heads, shape.key_length,
            shape.value_length or shape.key_length, n_ctx, kv_type)
    return hardware.estimate_memory_for_shape(shape.weights_bytes, 1, 0, 0, 0, n_ctx)


def _tokens_per_second(label: str, weights: int, needed: int,
                       machine: MachineMemory) -> tuple[float | None, bool]:
    """The estimate, and whether it is only an upper bound."""
    cpu, gpu = machine.cpu_bandwidth, machine.gpu_bandwidth
    if label == FITS_IN_GPU:
        return (speed.decode_tokens_per_second(weights, gpu) if gpu else None), False
    if label == PARTIAL_OFFLOAD:
        if not (cpu and machine.vram_free):
            return None, False  # how much stays on the CPU is unknown
        gpu_share = min(1.0, machine.vram_free / needed)
        if gpu:
            return speed.split_tokens_per_second(weights, gpu_share, gpu, cpu), False
        # Reading the GPU's part takes time too, so the CPU's part alone is faster than both.
        on_cpu = round(weights * (1 - gpu_share))
        return (speed.decode_tokens_per_second(on_cpu, cpu) if on_cpu else None), True
    if label == CPU_IN_RAM:
        return (speed.decode_tokens_per_second(weights, cpu) if cpu else None), False
    return None, False


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


def configured_kv_type() -> str:
    """The KV cache type fits are estimated for: config.toml's kv_type (default f16)."""
    from localr1.config import load_settings
    from localr1.paths import app_paths

    return load_settings(app_paths().config_file).kv_type


def plan_fit(plan: PullPlan, machine: MachineMemory) -> Fit:
    """The fit of a model about to be pulled: catalog facts when it is a catalog entry, the
    download size alone otherwise (its KV cache is unknown until the header is read)."""
    entry = plan.catalog_entry
    shape = shape_from_catalog(entry.model, plan.size_bytes) if entry else \
        ModelShape(plan.size_bytes, None, None, None, None, None)
    return assess(shape, default_context_size(), machine, kv_type=configured_kv_type())


def label_and_speed(fit: Fit) -> str:
    """"CPU only, fits in RAM, ~13 tok/s"; the label alone for a model too large to run."""
    return f"{fit.label_text}, {fit.speed_text}" if fit.runs else fit.label_text


def fit_text(fit: Fit) -> str:
    """E.g. "CPU only, fits in RAM, ~13 tok/s (needs about 1.4 GB: weights, KV cache for 8192
    tokens)"."""
    kv_type = "" if fit.kv_type == "f16" else f"{fit.kv_type} "
    kv = f"{kv_type}KV cache for {fit.n_ctx} tokens" if fit.kv_known else \
        "KV cache unknown until downloaded"
    draft = ", draft" if fit.draft_bytes else ""
    return f"{label_and_speed(fit)} (needs about {format_bytes(fit.needed_bytes)}: weights, " \
        f"{kv}{draft})"


def assess_catalog_entry(entry: CatalogEntry, n_ctx: int, machine: MachineMemory, *,
                         kv_type: str = "f16", draft: ConfiguredDraft | None = None) -> Fit:
    counted = draft.shape if draft and draft.catalog_name != entry.name else None
    return assess(shape_from_catalog(entry.model, entry.size_bytes), n_ctx, machine,
                  kv_type=kv_type, draft=counted)


def recommended_entries(entries: list[CatalogEntry], n_ctx: int, machine: MachineMemory, *,
                        kv_type: str = "f16", draft: ConfiguredDraft | None = None) -> set[str]:
    """Per model, the quant to suggest here: the largest that runs fully on the GPU; failing
    that, the catalog's default quant if it runs at all; in both cases only when its
    estimated speed is usable (speed.USABLE_TOKENS_PER_SECOND; unknown speeds pass). So the
    largest model recommended is the largest that fits and is fast enough. Should no model be
    fast enough, the fastest one that runs is suggested. Names of the chosen entries."""
    chosen: set[str] = set()
    by_model: dict[str, list[CatalogEntry]] = {}
    for entry in entries:
        by_model.setdefault(entry.model.name, []).append(entry)
    fits = {e.name: assess_catalog_entry(e, n_ctx, machine, kv_type=kv_type, draft=draft)
            for e in entries}
    for model_entries in by_model.values():
        usable = [e for e in model_entries
                  if fits[e.name].runs and speed.is_usable(fits[e.name].tokens_per_second)]
        on_gpu = [e for e in usable if fits[e.name].label == FITS_IN_GPU]
        if on_gpu:
            chosen.add(max(on_gpu, key=lambda e: e.size_bytes).name)
            continue
        default = next((e for e in usable if e.is_default_quant), None)
        if default is not None:
            chosen.add(default.name)
    if not chosen:
        running = [e for e in entries if fits[e.name].runs]
        if running:
            chosen.add(max(running, key=lambda e: fits[e.name].tokens_per_second or 0.0).name)
    return chosen
