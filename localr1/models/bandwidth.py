"""How fast this machine reads memory: what bounds a model's decode speed.

Decoding one token reads (nearly) every weight once, so tokens/s is about memory bandwidth over
model size (`speed.py`). The CPU's bandwidth is measured once, cheaply: a few `memmove`s of a
128 MB half of a 256 MB buffer, split over as many threads as llama.cpp decodes on (one
thread's copy reaches a fraction of what several cores pull together); the best of five
rounds counts (other programs' load makes rounds slower, never faster), as both the bytes read
and written. The result is kept in the cache folder with the machine's identity (CPU model,
threads, RAM), so a changed machine measures again and a broken file is measured over.

Load only ever lowers the figure, so a measurement taken while the machine is busy (1-minute
load average above half the CPUs) is used once and marked provisional: the next call measures
again. A figure older than MAX_AGE_SECONDS is measured again too, keeping the higher of the
two. A GPU's bandwidth comes from a table of known cards and Apple chips (nothing cheap
measures it from Python); any other GPU's, and a laptop part not in the table, is unknown.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from localr1.errors import ConfigError
from localr1.models import hardware
from localr1.whole_file import replace_text

CACHE_FILE_NAME = "memory_bandwidth.json"
BUFFER_BYTES = 256 * 1024**2
ROUNDS = 5
OVERRIDE_ENV = "LOCALR1_MEMORY_BANDWIDTH"
MAX_AGE_SECONDS = 7 * 24 * 3600

# Peak memory bandwidth, GB/s, by the name the driver reports; the longest name that matches
# wins ("RTX 4070 Ti SUPER" before "RTX 4070 Ti" before "RTX 4070").
GB_S = 10**9
GPU_BANDWIDTH = {
    "H200": 4800, "H100 PCIe": 2000, "H100": 3350,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100": 1555,
    "L40S": 864, "L40": 864, "L4": 300, "A10G": 600, "A10": 600, "T4": 320, "V100": 900,
    "RTX 5090": 1792, "RTX 5080": 960, "RTX 4090": 1008, "RTX 4080 SUPER": 736,
    "RTX 4080": 717, "RTX 4070 Ti SUPER": 672, "RTX 4070 Ti": 504, "RTX 4070 SUPER": 504,
    "RTX 4070": 504, "RTX 4060 Ti": 288, "RTX 4060": 272,
    "RTX 3090 Ti": 1008, "RTX 3090": 936, "RTX 3080 Ti": 912, "RTX 3080": 760,
    "RTX 3070 Ti": 608, "RTX 3070": 448, "RTX 3060 Ti": 448, "RTX 3060": 360,
    # Laptop parts share a desktop name but not its memory bus.
    "RTX 4090 Laptop": 576, "RTX 4080 Laptop": 432, "RTX 4070 Laptop": 256,
    "RTX 4060 Laptop": 256, "RTX 4050 Laptop": 192, "RTX 3080 Ti Laptop": 512,
    "Apple M1 Ultra": 800, "Apple M1 Max": 400, "Apple M1 Pro": 200, "Apple M1": 68,
    "Apple M2 Ultra": 800, "Apple M2 Max": 400, "Apple M2 Pro": 200, "Apple M2": 100,
    "Apple M3 Ultra": 819, "Apple M3 Max": 400, "Apple M3 Pro": 150, "Apple M3": 100,
    "Apple M4 Max": 546, "Apple M4 Pro": 273, "Apple M4": 120,
}
_LAPTOP_WORDS = ("laptop", "mobile", "max-q")


class BandwidthSettingError(ConfigError):
    """A bad LOCALR1_MEMORY_BANDWIDTH: commands that only show a speed may go on without it."""


def cpu_bandwidth(cache_dir: Path, threads: int | None = None) -> float:
    """Bytes/s that `threads` (default: llama.cpp's default thread count) read and write:
    the cache file's figure when it was measured on this machine, idle, within MAX_AGE_SECONDS;
    else measured now, the higher of that and any cached figure, and written back (marked
    provisional when the machine is busy, so the next call measures again)."""
    override = _bandwidth_override()
    if override is not None:
        return override
    threads = threads or hardware.default_threads()
    identity = machine_identity(threads)
    cache_file = cache_dir / CACHE_FILE_NAME
    cached = _read_cache(cache_file, identity)
    if cached is not None and cached.fresh:
        return cached.value
    busy = machine_is_busy()  # before measuring: the measurement itself adds load
    best = measure_bandwidth(threads)
    if cached is not None:
        best = max(best, cached.value)  # load only lowers the figure: the higher one is truer
    _write_cache(cache_file, identity, best, provisional=busy)
    return best


def machine_is_busy() -> bool:
    """Other programs' load would lower a measurement: the 1-minute load average is above
    half the CPUs (where the system has no load average, never busy)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows; or no /proc/loadavg
        return False
    return load > (os.cpu_count() or 1) / 2


def _bandwidth_override() -> float | None:
    """LOCALR1_MEMORY_BANDWIDTH (GB/s): the figure to use instead of measuring (a machine
    measured while busy, or a test suite that should not measure in every fresh home)."""
    text = os.environ.get(OVERRIDE_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise BandwidthSettingError(
            f"{OVERRIDE_ENV}={text!r}: give the memory bandwidth in GB/s, e.g. 20")
    return value * GB_S


def machine_identity(threads: int) -> dict[str, object]:
    """What the measurement depends on: another CPU, thread count or RAM measures again."""
    return {"cpu": _cpu_name(), "machine": platform.machine(), "threads": threads,
            "logical_cpus": os.cpu_count(), "ram_bytes": hardware.memory_info().total_bytes}


def measure_bandwidth(threads: int) -> float:
    """Copy half of a 256 MB buffer onto the other half on `threads` threads (ctypes releases
    the GIL during memmove), ROUNDS times; bytes read plus written per second, best round."""
    buffer = ctypes.create_string_buffer(BUFFER_BYTES)  # zeroed: its pages are touched now
    base, half = ctypes.addressof(buffer), BUFFER_BYTES // 2
    chunk = half // threads
    best = float("inf")
    for _ in range(ROUNDS):
        start = threading.Barrier(threads + 1)

        def copy(index: int, start: threading.Barrier = start) -> None:
            start.wait()
            ctypes.memmove(base + half + index * chunk, base + index * chunk, chunk)

        workers = [threading.Thread(target=copy, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - began)
    return 2 * chunk * threads / max(best, 1e-9)


def gpu_bandwidth(backend: hardware.BackendInfo) -> float | None:
    """The GPU's peak bandwidth in bytes/s when its name is in GPU_BANDWIDTH, else None."""
    if not backend.can_offload:
        return None
    if backend.name == "CUDA":
        name = nvidia_gpu_name()
    elif backend.name == "Metal":
        name = _cpu_name()  # "Apple M2 Pro": unified memory, one bandwidth
    else:
        name = None
    return table_bandwidth(name) if name else None


def table_bandwidth(gpu_name: str) -> float | None:
    """Bytes/s of the longest known name in `gpu_name` ("NVIDIA A100-SXM4-40GB": the A100's);
    None when none is, or when a laptop part would get its desktop namesake's figure."""
    laptop = any(word in gpu_name.lower() for word in _LAPTOP_WORDS)
    for known in sorted(GPU_BANDWIDTH, key=len, reverse=True):
        # Not inside a longer name ("A10" in "A100", "L4" in "L40"); a "-" may follow, as
        # in "A100-PCIE-40GB" and "V100-SXM2-16GB".
        if re.search(rf"(?<![\w-]){re.escape(known)}(?!\w)", gpu_name, re.IGNORECASE):
            if laptop and "laptop" not in known.lower():
                return None
            return GPU_BANDWIDTH[known] * GB_S
    return None


@functools.cache
def nvidia_gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, asked once per process (listings ask often)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    names = result.stdout.strip().splitlines()
    return names[0].strip() if names else None


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, check=False,
                                  timeout=10).stdout.strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class _Cached:
    value: float
    fresh: bool  # measured on an idle machine less than MAX_AGE_SECONDS ago: use it as it is


def _read_cache(cache_file: Path, identity: dict[str, object]) -> _Cached | None:
    try:
        data = json.loads(cache_file.read_text())
        value = float(data["bytes_per_second"])
        measured_at = float(data.get("measured_at", 0.0))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # broken: measure again
        return None
    if data.get("machine") != identity or not 0 < value < float("inf"):
        return None
    age = time.time() - measured_at
    return _Cached(value, 0 <= age < MAX_AGE_SECONDS and data.get("provisional") is not True)


def _write_cache(cache_file: Path, identity: dict[str, object], value: float, *,
                 provisional: bool) -> None:
    """Best effort: a read-only cache folder only costs measuring again next time.
    `provisional`: measured under load, so the next call measures again."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        replace_text(cache_file, json.dumps({"machine": identity, "bytes_per_second": value,
                                             "measured_at": time.time(),
                                             "provisional": provisional}))
    except OSError:
        pass
