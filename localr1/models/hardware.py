"""What this machine offers a model: RAM, GPU backend and VRAM, threads; and what a model needs.

Memory estimates follow llama.cpp's own accounting closely enough to decide what fits:
weights (the GGUF's tensor data), the KV cache (K and V for every layer, context slot and KV
head, in the configured kv_type), and a compute-buffer allowance.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from localr1.models.gguf_header import GGUFHeader

GIB = 1024**3
# llama.cpp's compute buffers and scratch: a few hundred MB for the distills at 8k context.
COMPUTE_OVERHEAD_BYTES = 512 * 1024**2
# Bytes per KV-cache element: ggml's q8_0 block is 32 int8 + an f16 scale (34 bytes per 32),
# q4_0's 32 nibbles + an f16 scale (18 bytes per 32).
KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "CPU", "CUDA", "Metal", "Vulkan", "SYCL", "HIP" ...
    can_offload: bool
    system_info: str


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    n_layers: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    def per_layer_bytes(self) -> int:
        """Weights plus KV cache of one repeating layer (what offloading one layer moves)."""
        n = max(self.n_layers, 1)
        return (self.weights_bytes + self.kv_cache_bytes) // n


def memory_info() -> MemoryInfo:
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        values = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
        available = values.get("MemAvailable", values.get("MemFree", 0))
        return MemoryInfo(values.get("MemTotal", 0), available)
    if platform.system() == "Darwin":
        return _darwin_memory()
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    free_pages = os.sysconf("SC_AVPHYS_PAGES")
    return MemoryInfo(pages * page_size, free_pages * page_size)


def _darwin_memory() -> MemoryInfo:
    total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True,
                               text=True, check=False).stdout.strip() or 0)
    vm_stat = subprocess.run(["vm_stat"], capture_output=True, text=True, check=False).stdout
    page_size = int(re.search(r"page size of (\d+)", vm_stat)[1]) if "page size" in vm_stat \
        else 16384
    pages = {key.strip(): int(value.strip(" .")) for key, value in
             re.findall(r"^(Pages [^:]+):\s+(\d+)", vm_stat, re.M)}
    free = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages speculative",
                                          "Pages purgeable"))
    return MemoryInfo(total, free * page_size)


@cache
def backend_info() -> BackendInfo:
    """The GPU backend this llama-cpp-python build was compiled with (imports llama_cpp)."""
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    can_offload = _has_local_gpu()
    name = "CPU"
    for marker, backend in (("CUDA", "CUDA"), ("METAL", "Metal"), ("Metal", "Metal"),
                            ("VULKAN", "Vulkan"), ("Vulkan", "Vulkan"), ("SYCL", "SYCL"),
                            ("HIP", "HIP"), ("ROCm", "HIP")):
        if marker in system_info:
            name = backend
            break
    if can_offload and name == "CPU":
        name = "GPU"
    return BackendInfo(name, can_offload, system_info.strip())


def _has_local_gpu() -> bool:
    """Whether llama.cpp has a GPU of this machine to offload to. Not
    llama_supports_gpu_offload(): that is true in every build with RPC, GPU or not."""
    try:
        return bool(local_gpu_devices())
    except RuntimeError:  # a libllama that does not pass ggml's symbols on (Windows DLLs)
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload()) \
            and not llama_cpp.llama_supports_rpc()


def local_gpu_devices() -> list[int]:
    """This machine's GPUs (integrated ones too) as llama.cpp's device handles, in its order;
    RPC workers' devices (registered by --rpc) are GPUs to llama.cpp but not this machine's."""
    import llama_cpp

    from localr1.engine.ggml_devices import DEVICE_TYPE_GPU, DEVICE_TYPE_IGPU, ggml_backend

    if not llama_cpp.llama_supports_gpu_offload():
        return []
    ggml = ggml_backend()
    return [device for device in ggml.devices()
            if ggml.dev_type(device) in (DEVICE_TYPE_GPU, DEVICE_TYPE_IGPU)
            and ggml.reg_name(ggml.dev_backend_reg(device)) != "RPC"]


def gpu_free_bytes(backend: BackendInfo) -> int | None:
    """Free VRAM where we can tell; None when unknown."""
    if not backend.can_offload:
        return 0
    if backend.name == "CUDA" and shutil.which("nvidia-smi"):
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=False, timeout=10,
        )
        numbers = [int(x) for x in result.stdout.split() if x.isdigit()]
        if numbers:
            return max(numbers) * 1024**2  # layers go to one device by default
    if backend.name == "Metal":
        # Unified memory: macOS lets the GPU wire about two thirds of RAM by default.
        return memory_info().total_bytes * 2 // 3
    return None


def kv_cache_bytes(n_layers: int, n_ctx: int, n_kv_heads: int, key_length: int,
                   value_length: int, kv_type: str = "f16") -> int:
    """K and V caches of every layer and context slot, in `kv_type` (config.KV_TYPES)."""
    elements = n_layers * n_ctx * n_kv_heads * (key_length + value_length)
    return int(elements * KV_BYTES_PER_ELEMENT[kv_type])


def estimate_memory(headers: GGUFHeader | Sequence[GGUFHeader], n_ctx: int,
                    kv_type: str = "f16") -> MemoryEstimate:
    """What a model needs at `n_ctx`. `headers`: its GGUF's header, or every part's of a split
    GGUF (loading.read_model_headers): the first part holds the shape, and the weights are all
    the parts' tensor data, as the fit labels count them (GGUFSummary.from_headers)."""
    parts = [headers] if isinstance(headers, GGUFHeader) else list(headers)
    header = parts[0]
    n_layers = header.block_count or 1
    key_len = header.key_length or 128
    kv = kv_cache_bytes(n_layers, n_ctx, header.head_count_kv or 1, key_len,
                        header.value_length or key_len, kv_type)
    return MemoryEstimate(sum(part.data_size for part in parts), kv, COMPUTE_OVERHEAD_BYTES,
                          n_layers)


def draft_estimate(headers: GGUFHeader | Sequence[GGUFHeader], n_ctx: int,
                   kv_type: str = "f16") -> MemoryEstimate:
    """What a draft model adds beside its target: its weights, its own KV cache at the same
    context and kv_type, and its own compute buffers (a second llama.cpp context)."""
    return estimate_memory(headers, n_ctx, kv_type)


def plan_gpu_layers(requested: int | str, estimate: MemoryEstimate, backend: BackendInfo,
                    free_vram: int | None) -> int:
    """Resolve gpu_layers ("auto", -1 = all, N) to the number of layers llama.cpp offloads."""
    total_layers = estimate.n_layers + 1  # llama.cpp counts the output layer too
    if not backend.can_offload:
        return 0
    if requested == "auto":
        if free_vram is None:
            return total_layers  # unknown VRAM (e.g. Vulkan): try everything, like Ollama
        usable = free_vram - estimate.overhead_bytes
        fit = usable // max(estimate.per_layer_bytes(), 1)
        return int(max(0, min(total_layers, fit)))
    if requested == -1:
        return total_layers
    return min(int(requested), total_layers)


def default_threads() -> int:
    """One thread per physical core: llama.cpp decoding gains nothing from SMT siblings."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus) // 2) if len(cpus) > 4 else len(cpus)  # no sysfs: guess
    return max(1, len(cores))


def estimate_memory_for_shape(weights_bytes: int, n_layers: int, n_kv_heads: int,
                              key_length: int, value_length: int, n_ctx: int,
                              kv_type: str = "f16") -> MemoryEstimate:
    """Like estimate_memory, from numbers alone (a catalog entry before its GGUF is on disk)."""
    kv = kv_cache_bytes(n_layers, n_ctx, n_kv_heads, key_length, value_length, kv_type)
    return MemoryEstimate(weights_bytes, kv, COMPUTE_OVERHEAD_BYTES, n_layers)


# Tests point this at a number to exercise "no space left" without filling a real disk.
FREE_DISK_OVERRIDE_ENV = "LOCALR1_TEST_FREE_BYTES"


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    override = os.environ.get(FREE_DISK_OVERRIDE_ENV)
    if override:
        return int(override)
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage(path.anchor or ".").free
