"""One line instead of a silent SIGABRT when llama.cpp gives up on an assertion.

``GGML_ASSERT``/``GGML_ABORT`` end in ``abort()``: without a hook the process dies with exit
134 and, with fd 2 silenced by llama-cpp-python during a load, no message at all. GGML's abort
callback (``ggml_set_abort_callback`` in ggml.h) lets us print "localr1: llama.cpp aborted:
<message>" on the saved stderr first, after a front end's hook has put the terminal back (the
TUI leaves the alternate screen and shows the cursor). The process still dies: GGML calls
``abort()`` when the callback returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

from localr1.engine import saved_stderr
from localr1.terminal_text import visible_controls

ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)  # ggml_abort_callback_t

_installed = None  # the ctypes callback object: must outlive every call from C
_before_abort: Callable[[], None] | None = None


def install() -> None:
    """Hook GGML's abort (idempotent)."""
    global _installed
    if _installed is not None:
        return
    saved_stderr.keep()
    callback = ABORT_CALLBACK(_on_abort)
    set_abort_callback = ggml_function("ggml_set_abort_callback")
    set_abort_callback.argtypes = [ABORT_CALLBACK]
    set_abort_callback.restype = ABORT_CALLBACK
    set_abort_callback(callback)
    _installed = callback


def set_before_abort(hook: Callable[[], None] | None) -> None:
    """Run `hook` (e.g. restore the terminal) before the abort line is printed; None clears it."""
    global _before_abort
    _before_abort = hook


def abort_line(message: str) -> str:
    """ "localr1: llama.cpp aborted: llama-model.cpp:1328: GGML_ASSERT(...) failed" """
    where, sep, rest = message.partition(": ")
    if sep and ":" in where:  # "/build/.../src/llama-model.cpp:1328": keep the file name
        message = os.path.basename(where) + sep + rest
    # The message can quote model data (a tensor or key name): no escape sequence may act.
    return "localr1: llama.cpp aborted: " + visible_controls(" ".join(message.split()))


def ggml_function(name: str):
    """A GGML C function, from the same library instance llama-cpp-python loaded."""
    from llama_cpp import llama_cpp as bindings

    # dlsym on libllama also searches the libraries it links (libggml-base on Linux and macOS).
    with contextlib.suppress(AttributeError):
        return getattr(bindings._lib, name)
    lib_dir = os.path.join(os.path.dirname(bindings.__file__), "lib")
    for file_name in sorted(os.listdir(lib_dir)):
        if "ggml-base" in file_name:
            with contextlib.suppress(OSError, AttributeError):
                return getattr(ctypes.CDLL(os.path.join(lib_dir, file_name)), name)
    raise RuntimeError(f"{name} not found in llama-cpp-python's libraries")


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace")
    hook = _before_abort
    if hook is not None:
        with contextlib.suppress(Exception):  # the process is dying: the line must still print
            hook()
    saved_stderr.write(abort_line(text) + "\n")
