"""One line instead of a silent SIGABRT when llama.cpp gives up on an assertion.

``GGML_ASSERT``/``GGML_ABORT`` end in ``abort()``: without a hook the process dies with exit
134 and, with fd 2 silenced by llama-cpp-python during a load, no message at all. GGML's abort
callback (``ggml_set_abort_callback`` in ggml.h) lets us print "localr1: llama.cpp aborted:
<message>" on the saved stderr first, after a front end's hook has put the terminal back (the
TUI leaves the alternate screen and shows the cursor). The process still dies: GGML calls
``abort()`` when the callback returns.

RPC workers (``watch_workers``): llama.cpp's RPC client aborts when a worker dies mid-answer
(``RPC_STATUS_ASSERT`` in ggml-rpc.cpp), without saying which one. For those aborts the line
names the workers whose port is closed (a refused or reset connection) and the process exits 1
at once (a lost worker is a fault of the network, not a crash: no SIGABRT, no core dump). A
worker whose port does not answer in time is not named: a live worker serving this process
never accepts another connection (llama.cpp's server takes one client at a time).

Before the line, every hook registered with `on_exit` runs (a turn being written flushes what
it streamed), then the front end's `set_before_abort` hook (the terminal). rpc_watchdog ends
the process through the same `end_process`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

from localr1.engine import saved_stderr
from localr1.terminal_text import visible_controls

ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)  # ggml_abort_callback_t

_installed = None  # the ctypes callback object: must outlive every call from C
# Held by the first abort and never let go: a second thread aborting meanwhile waits for the
# process to end, so one line is printed.
_aborting = threading.Lock()
_before_abort: Callable[[], None] | None = None
_exit_hooks: list[Callable[[], None]] = []  # on_exit's, run before the front end's hook
_workers: tuple[str, ...] = ()  # "host:port" of each RPC worker this process uses

# Long enough for a LAN round trip, short enough that the line comes within seconds.
WORKER_PROBE_TIMEOUT = 1.0
WORKER_PROBE_ROUNDS = 5


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


@contextlib.contextmanager
def on_exit(hook: Callable[[], None]) -> Iterator[None]:
    """Run `hook` (e.g. flush the answer being saved) if the process is ended by an abort or
    rpc_watchdog while the block runs. It runs on whichever thread ends the process (llama.cpp's
    RPC thread, the watchdog's): it must not wait long on a lock the decoding thread holds, nor
    retry (the line waits for it: AssistantMessageWriter.flush_before_exit tries once)."""
    _exit_hooks.append(hook)
    try:
        yield
    finally:
        _exit_hooks.remove(hook)


def watched_workers() -> tuple[str, ...]:
    """The RPC workers this process uses ("host:port"), as watch_workers was told."""
    return _workers


def end_process(line: Callable[[], str], code: int, fallback: str) -> NoReturn:
    """Run the exit hooks, print `line()` (`fallback` if it fails) on the saved stderr and exit
    with `code` at once, from any thread; a second caller meanwhile waits for the process to
    end, so one line is printed."""
    _aborting.acquire()
    _run_hooks()
    text = fallback
    with contextlib.suppress(Exception):
        text = line()
    saved_stderr.write(text + "\n")
    os._exit(code)


def _run_hooks() -> None:
    for hook in [*_exit_hooks, _before_abort]:
        if hook is not None:
            with contextlib.suppress(Exception):  # the process is dying: the line must print
                hook()


def watch_workers(endpoints: Iterable[str]) -> None:
    """Report a lost RPC worker among `endpoints` as one line and exit 1; installs the hook.
    Call before llama.cpp first connects to them (connecting aborts too)."""
    global _workers
    install()
    _workers = tuple(dict.fromkeys((*_workers, *endpoints)))


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


def worker_fault_line(message: str, workers: tuple[str, ...],
                      lost: list[tuple[str, str]]) -> str:
    """ "localr1: RPC worker 127.0.0.1:50053 stopped answering (connection refused)" """
    if len(lost) == 1:
        [(endpoint, why)] = lost
        return visible_controls(f"localr1: RPC worker {endpoint} stopped answering ({why})")
    if lost:
        names = ", ".join(f"{endpoint} ({why})" for endpoint, why in lost)
        return visible_controls(f"localr1: RPC workers {names} stopped answering")
    # The connection broke but every worker still takes new ones (a network glitch, a worker
    # that restarted): say what llama.cpp saw.
    what = abort_line(message).removeprefix("localr1: llama.cpp aborted: ")
    return visible_controls(f"localr1: lost the connection to RPC worker "
                            f"{' or '.join(workers)}: {what}")


def is_rpc_fault(message: str) -> bool:
    """An abort raised by llama.cpp's RPC client ("/.../ggml-rpc.cpp:566: Remote RPC ...")."""
    path = message.partition(": ")[0].rpartition(":")[0]
    return path.replace("\\", "/").rpartition("/")[2] == "ggml-rpc.cpp"  # Windows' __FILE__ too


def unreachable_workers(endpoints: tuple[str, ...],
                        timeout: float = WORKER_PROBE_TIMEOUT) -> list[tuple[str, str]]:
    """(endpoint, why) for each worker whose port is closed, probed at once.

    A plain connect, not the RPC hello. A connect that times out is no sign of a lost worker:
    llama.cpp's server accepts one client at a time with a backlog of 1, so a live worker that
    still serves this process leaves our connect unanswered (as does a name lookup that hangs).
    """
    reasons: dict[str, str] = {}

    def probe(endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (ConnectionRefusedError, ConnectionResetError):
            # A reset comes from a listening socket closing as we connect: the worker's
            # process is going away, as surely as a refusal says; one wording for both.
            reasons[endpoint] = "connection refused"
        except TimeoutError:
            pass  # busy, perhaps serving us: not lost
        except (OSError, ValueError) as exc:  # no route to the host, an unknown name
            reasons[endpoint] = getattr(exc, "strerror", None) or str(exc)

    threads = [threading.Thread(target=probe, args=(endpoint,), daemon=True)
               for endpoint in endpoints]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 1.0)  # a name lookup that hangs must not hold the line back
    return [(endpoint, reasons[endpoint]) for endpoint in endpoints if endpoint in reasons]


def lost_workers(endpoints: tuple[str, ...], rounds: int = WORKER_PROBE_ROUNDS,
                 pause: float = 0.2) -> list[tuple[str, str]]:
    """unreachable_workers, asked again for a moment while every worker still connects: a
    killed worker's connection to us can close a little before its listening socket does."""
    for round_number in range(rounds):
        lost = unreachable_workers(endpoints)
        if lost or round_number == rounds - 1:
            return lost
        time.sleep(pause)
    return []


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace")
    workers = _workers
    if workers and is_rpc_fault(text):
        # Runs on the RPC client's thread: ends the whole process, no abort().
        end_process(lambda: worker_fault_line(text, workers, lost_workers(workers)), 1,
                    abort_line(text))
    _aborting.acquire()  # a second abort waits here until the first has ended the process
    _run_hooks()
    saved_stderr.write(abort_line(text) + "\n")
