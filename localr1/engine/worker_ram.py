"""A CPU worker reports this machine's available RAM as its free memory, not its total.

llama.cpp's CPU device reports the total RAM as both free and total (ggml-cpu.cpp: '"free"
system memory is ill-defined'; Windows excepted, where it reports the available RAM), and the
RPC server answers a client's GET_DEVICE_MEMORY with that figure (rpc_server::
get_device_memory -> ggml_backend_dev_memory -> the device's iface.get_memory). Clients split
layers by it, and fit labels count it: a worker busy with other programs would be given layers
it cannot hold. The server API takes no override, so `report_available_ram` puts our function
in that one slot of the CPU device's interface: the device is a writable static struct in
ggml-cpu.cpp, laid out as ggml-backend-impl.h says (get_name, get_description, get_memory
first).

Nothing is called or written before the layout is checked without calling into it: the device
must lie in writable memory of ggml's CPU library (the one exporting ggml_backend_cpu_reg), and
its first three slots must point into that library's code (dladdr, and /proc/self/maps where
there is one). Only then is the get_memory slot called, and it must report what llama.cpp's
CPU device reports (sysconf's physical pages, as both free and total); else the one-line
refusal, and llama.cpp's figure stays.

It changes what the CPU device reports to every caller in the process (llama.cpp itself reads
it only to split layers over devices that report no memory at all): meant for `localr1
worker`, whose process serves and does nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

from localr1.engine.ggml_devices import DEVICE_TYPE_CPU, ggml_backend
from localr1.errors import LocalR1Error
from localr1.models.hardware import memory_info

_GET_MEMORY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                               ctypes.POINTER(ctypes.c_size_t))
_NAME, _DESCRIPTION, _MEMORY = range(3)  # slots of struct ggml_backend_device_i

_ours: dict[int, object] = {}  # device -> our get_memory: must outlive every call from C


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def report_available_ram(device: int) -> None:
    """Make the CPU `device` report this machine's available RAM as free (idempotent; nothing
    to do on Windows, where llama.cpp does so)."""
    if os.name == "nt" or device in _ours:
        return
    slots = ctypes.cast(device, ctypes.POINTER(ctypes.c_void_p * 3)).contents
    llama_cpps = _checked_get_memory(device, slots)

    def get_memory(dev, free, total) -> None:
        llama_cpps(dev, free, total)  # the total, as both
        with contextlib.suppress(Exception):  # C waits for an answer: then llama.cpp's stays
            free[0] = min(memory_info().available_bytes, total[0])

    ours = _GET_MEMORY(get_memory)
    _ours[device] = ours
    slots[_MEMORY] = ctypes.cast(ours, ctypes.c_void_p).value


def _checked_get_memory(device: int, slots):
    """llama.cpp's get_memory of the CPU `device`, once its layout is as this module knows."""
    refusal = LocalR1Error("llama.cpp's CPU device is not laid out as this localr1 knows: "
                           "cannot report its free memory")
    try:
        library = _library_of(ctypes.cast(_cpu_reg(), ctypes.c_void_p).value)
    except (OSError, RuntimeError, AttributeError):  # no dladdr, or no CPU library to find
        raise refusal from None
    if library is None or _library_of(device) != library \
            or _mapping_allows(device, "w") is False:
        raise refusal
    for slot in (_NAME, _DESCRIPTION, _MEMORY):
        address = slots[slot]
        if not address or _library_of(address) != library \
                or _mapping_allows(address, "x") is False:
            raise refusal
    if ggml_backend().dev_type(device) != DEVICE_TYPE_CPU:
        raise refusal
    llama_cpps = _GET_MEMORY(slots[_MEMORY])
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    llama_cpps(device, ctypes.byref(free), ctypes.byref(total))
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # ggml-cpu.cpp's figure
    if (free.value, total.value) != (physical, physical):
        raise refusal
    return llama_cpps


def _cpu_reg():
    from localr1.engine.ggml_abort import ggml_function

    return ggml_function("ggml_backend_cpu_reg")  # exported by ggml's CPU library


def _library_of(address: int) -> int | None:
    """The load address of the shared library whose segments hold `address` (dladdr); None
    when none does."""
    info = _DlInfo()
    if not _dladdr()(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return info.dli_fbase


@functools.cache
def _dladdr():
    """dladdr(3): in the C library (glibc 2.34 on, macOS), in libdl before."""
    try:
        function = ctypes.CDLL(None).dladdr
    except AttributeError:
        function = ctypes.CDLL(ctypes.util.find_library("dl")).dladdr
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    return function


def _mapping_allows(address: int, permission: str) -> bool | None:
    """Whether the memory mapping holding `address` has `permission` ("x" code, "w" writable)
    per /proc/self/maps; None where there is no such file to tell."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        span, permissions = line.split()[:2]
        start, end = (int(bound, 16) for bound in span.split("-"))
        if start <= address < end:
            return permission in permissions
    return False
