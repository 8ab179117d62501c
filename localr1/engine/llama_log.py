"""Keep llama.cpp's C-level log off the user's terminal, but remember its errors.

llama-cpp-python prints llama.cpp's ERROR lines to stderr even with verbose=False, which would
break our one-line error contract; we route the log through our own callback instead and put
the last error into the message we raise. LOCALR1_DEBUG=1 shows the full log, on the saved
stderr so that the lines logged while a model loads (when fd 2 is /dev/null) show too.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import deque

from localr1.engine import saved_stderr

# enum ggml_log_level in ggml.h; CONT continues the previous line at its level.
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5

_lock = threading.Lock()
_recent_errors: deque[str] = deque(maxlen=20)
_installed_callback = None  # keep a reference: ctypes must not free the C callback
_last_level = 0


def install() -> None:
    """Route llama.cpp's log through us (idempotent)."""
    global _installed_callback
    if _installed_callback is not None:
        return
    import llama_cpp

    saved_stderr.keep()
    show_all = os.environ.get("LOCALR1_DEBUG", "") not in ("", "0")

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", "replace")
        if show_all:
            saved_stderr.write(message)
        record(level, message)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _installed_callback = callback


def record(level: int, message: str) -> None:
    """Remember `message` if it is (or continues) an error line."""
    global _last_level
    with _lock:
        if level == GGML_LOG_LEVEL_CONT:
            level = _last_level
            if level == GGML_LOG_LEVEL_ERROR and _recent_errors and message.strip():
                _recent_errors[-1] += message.rstrip("\n")
                return
        _last_level = level
        if level == GGML_LOG_LEVEL_ERROR and message.strip():
            _recent_errors.append(message.rstrip("\n"))


def take_errors() -> list[str]:
    """The error lines logged since the last call, oldest first."""
    with _lock:
        errors = [line.strip() for line in _recent_errors]
        _recent_errors.clear()
    return errors


def load_failure_detail(errors: list[str]) -> str | None:
    """llama.cpp's own reason from the errors logged by a failed load, without its prefixes.

    A failed load logs e.g. "llama_model_load: error loading model: check_tensor_dims: tensor
    'output_norm.weight' not found" and then "...: failed to load model"; the first says why.
    """
    for line in errors:
        _, marker, reason = line.partition("error loading model")
        if marker:
            return reason.lstrip(" :").removeprefix("architecture: ").strip() or line
    return errors[-1] if errors else None
