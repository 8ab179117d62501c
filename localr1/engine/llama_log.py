"""Keep llama.cpp's C-level log off the user's terminal, but remember its errors.

llama-cpp-python prints llama.cpp's ERROR lines to stderr even with verbose=False, which would
break our one-line error contract; we route the log through our own callback instead and put
the last error into the message we raise. LOCALR1_DEBUG=1 shows the full log.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections import deque

_GGML_LOG_LEVEL_ERROR = 3
_GGML_LOG_LEVEL_CONT = 5

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

    show_all = os.environ.get("LOCALR1_DEBUG", "") not in ("", "0")

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        global _last_level
        level = _last_level if level == _GGML_LOG_LEVEL_CONT else level
        _last_level = level
        message = text.decode("utf-8", "replace")
        if show_all:
            print(message, end="", file=sys.stderr, flush=True)
        if level == _GGML_LOG_LEVEL_ERROR and message.strip():
            with _lock:
                _recent_errors.append(message.strip())

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _installed_callback = callback


def take_errors() -> list[str]:
    """The error lines logged since the last call, oldest first."""
    with _lock:
        errors = list(_recent_errors)
        _recent_errors.clear()
    return errors
