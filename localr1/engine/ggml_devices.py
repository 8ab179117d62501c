"""llama.cpp's backend registry (ggml-backend.h) through ctypes: this process's devices, their
names, types and memory, and the backend registries (RPC's among them). Each C function is
typed once here, for hardware's GPU list and for the RPC backend.

The functions come from the ggml llama-cpp-python loaded (`ggml_abort.ggml_function`); where
they cannot be reached (a libllama that does not pass ggml's symbols on, as Windows DLLs do),
`ggml_backend()` raises RuntimeError.
"""

from __future__ import annotations

import ctypes
from functools import cache

# enum ggml_backend_dev_type in ggml-backend.h
DEVICE_TYPE_CPU, DEVICE_TYPE_GPU, DEVICE_TYPE_IGPU = 0, 1, 2


class GgmlBackend:
    """The ggml-backend.h calls localr1 makes, typed once; devices and registries are the
    handles (integers) llama.cpp gives."""

    def __init__(self) -> None:
        from localr1.engine.ggml_abort import ggml_function

        def typed(name: str, restype, *argtypes):
            function = ggml_function(name)
            function.restype, function.argtypes = restype, list(argtypes)
            return function

        pointer, size, text = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self.dev_count = typed("ggml_backend_dev_count", size)
        self.dev_get = typed("ggml_backend_dev_get", pointer, size)
        self.dev_by_type = typed("ggml_backend_dev_by_type", pointer, ctypes.c_int)
        self.dev_type = typed("ggml_backend_dev_type", ctypes.c_int, pointer)
        self.dev_backend_reg = typed("ggml_backend_dev_backend_reg", pointer, pointer)
        self.reg_by_name = typed("ggml_backend_reg_by_name", pointer, text)
        self.proc_address = typed("ggml_backend_reg_get_proc_address", pointer, pointer, text)
        self.backend_register = typed("ggml_backend_register", None, pointer)
        self.reg_dev_count = typed("ggml_backend_reg_dev_count", size, pointer)
        self.reg_dev_get = typed("ggml_backend_reg_dev_get", pointer, pointer, size)
        self._reg_name = typed("ggml_backend_reg_name", text, pointer)
        self._name = typed("ggml_backend_dev_name", text, pointer)
        self._description = typed("ggml_backend_dev_description", text, pointer)
        self._memory = typed("ggml_backend_dev_memory", None, pointer, ctypes.POINTER(size),
                             ctypes.POINTER(size))

    def devices(self) -> list[int]:
        """Every device in llama.cpp's order (RPC workers' too, once registered)."""
        return [self.dev_get(index) for index in range(self.dev_count())]

    def reg_name(self, reg: int) -> str:
        return (self._reg_name(reg) or b"").decode("utf-8", "replace")

    def name(self, device: int) -> str:
        return (self._name(device) or b"").decode("utf-8", "replace")

    def description(self, device: int) -> str:
        return (self._description(device) or b"").decode("utf-8", "replace")

    def memory(self, device: int) -> tuple[int, int]:
        """(free, total) bytes, as the device reports them."""
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self._memory(device, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value


@cache
def ggml_backend() -> GgmlBackend:
    """The one typed instance of this process (RuntimeError where ggml cannot be reached)."""
    return GgmlBackend()
