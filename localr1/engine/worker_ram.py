"""A CPU worker reports this machine's available RAM as its free memory, not its total.

llama.cpp's CPU device reports the total RAM as both free and total (ggml-cpu.cpp: '"free"
system memory is ill-defined'; Windows excepted, where it reports the available RAM), and the
RPC server answers a client's GET_DEVICE_MEMORY with that figure (rpc_server::
get_device_memory -> ggml_backend_dev_memory -> the device's iface.get_memory). Clients split
layers by it, and fit labels count it: a worker busy with other programs would be given layers
it cannot hold. The server API takes no override, so `report_available_ram` puts our function
in that one slot of the CPU device's interface: the device is a writable static struct in
ggml-cpu.cpp, laid out as ggml-backend-impl.h says (get_name, get_description, get_memory
first), which is checked before the slot is written.

It changes what the CPU device reports to every caller in the process (llama.cpp itself reads
it only to split layers over devices that report no memory at all): meant for `localr1
worker`, whose process serves and does nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from localr1.engine.ggml_devices import DEVICE_TYPE_CPU, ggml_backend
from localr1.errors import LocalR1Error
from localr1.models.hardware import memory_info

_GET_TEXT = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)  # get_name, get_description
_GET_MEMORY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                               ctypes.POINTER(ctypes.c_size_t))
_NAME, _DESCRIPTION, _MEMORY = range(3)  # slots of struct ggml_backend_device_i

_ours: dict[int, object] = {}  # device -> our get_memory: must outlive every call from C


def report_available_ram(device: int) -> None:
    """Make the CPU `device` report this machine's available RAM as free (idempotent; nothing
    to do on Windows, where llama.cpp does so)."""
    if os.name == "nt" or device in _ours:
        return
    ggml = ggml_backend()
    slots = ctypes.cast(device, ctypes.POINTER(ctypes.c_void_p * 3)).contents
    def text(slot: int) -> str:
        return (_GET_TEXT(slots[slot])(device) or b"").decode("utf-8", "replace")

    if ggml.dev_type(device) != DEVICE_TYPE_CPU or text(_NAME) != ggml.name(device) \
            or text(_DESCRIPTION) != ggml.description(device):
        raise LocalR1Error("llama.cpp's CPU device is not laid out as this localr1 knows: "
                           "cannot report its free memory")
    llama_cpps = _GET_MEMORY(slots[_MEMORY])

    def get_memory(dev, free, total) -> None:
        llama_cpps(dev, free, total)  # the total, as both
        with contextlib.suppress(Exception):  # C waits for an answer: then llama.cpp's stays
            free[0] = min(memory_info().available_bytes, total[0])

    ours = _GET_MEMORY(get_memory)
    _ours[device] = ours
    slots[_MEMORY] = ctypes.cast(ours, ctypes.c_void_p).value

