"""llama.cpp's RPC backend (ggml-rpc), reached through ctypes on llama-cpp-python's libraries:
the workers this process offloads layers to (`connect_workers`), and this machine's backend
served as a worker (`serve_worker`, behind `localr1 worker`).

The RPC functions come from the backend registry (`ggml_backend_reg_by_name("RPC")` and
`ggml_backend_reg_get_proc_address`), as llama.cpp's own `--rpc` and rpc-server reach them; a
build without `-DGGML_RPC=on` has no such registry entry, and a llama-cpp-python release other
than the one of our protocol version speaks another protocol (both: `RpcUnavailableError`, with
the command that installs the right build).

llama.cpp's RPC client aborts the process when a worker is down, answers garbage or speaks
another protocol version (`RPC_STATUS_ASSERT` -> `GGML_ABORT` in ggml-rpc.cpp). So before C
connects to an endpoint, `probe_worker` speaks the protocol's HELLO itself over a Python socket
and turns each of those cases into a one-line `WorkerError`. Wire format (ggml-rpc.cpp): a
request is | command (1 byte) | size (uint64) | data |, a reply | size (uint64) | data |; the
HELLO request carries 24 bytes of transport capabilities (zeros: plain TCP), its reply the
version (major, minor, patch, padding) and the server's 24 capability bytes.

Registering devices is process-wide: every later model load offloads to them. Tests run RPC
clients in child processes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from localr1.engine import worker_ram
from localr1.engine.ggml_devices import DEVICE_TYPE_CPU, ggml_backend
from localr1.errors import LocalR1Error
from localr1.rpc_endpoints import DEFAULT_PORT as DEFAULT_PORT  # re-exported
from localr1.rpc_endpoints import (  # also config's check
    WorkerBusyError,
    WorkerError,
    parse_endpoints,
)
from localr1.terminal_text import visible_controls

# ggml-rpc.h of the llama.cpp llama-cpp-python 0.3.36 vendors; a worker built from another one
# is refused by the C client (major differs, or its minor is newer), so we refuse it first.
RPC_PROTO_MAJOR, RPC_PROTO_MINOR, RPC_PROTO_PATCH = 7, 0, 0
# The llama-cpp-python releases whose llama.cpp speaks that protocol. The version is a macro
# of ggml-rpc.h that the library exports nowhere, and it changes between releases (0.3.16:
# 2.0.0, no RPC registry; 0.3.20: 3.6.1; 0.3.25: 4.0.0; 0.3.30: 4.0.1; 0.3.35: 5.0.0), as do
# the commands this module sends: any other release is refused before it runs (`rpc_problem`).
RPC_LLAMA_CPP_PYTHON = ("0.3.36",)
RPC_CMD_HELLO = 14  # fixed across versions (a static_assert in ggml-rpc.cpp)
RPC_CMD_GET_DEVICE_MEMORY, RPC_CMD_DEVICE_COUNT = 11, 15  # enum rpc_cmd of protocol 7
RPC_CONN_CAPS_SIZE = 24
_HELLO_REPLY_SIZE = 4 + RPC_CONN_CAPS_SIZE
_OLD_HELLO_REPLY_SIZE = 3  # before protocol 7: major, minor, patch
PROBE_TIMEOUT = 5.0

_GPU_CMAKE_FLAGS = {"CUDA": "-DGGML_CUDA=on", "Metal": "-DGGML_METAL=on",
                    "Vulkan": "-DGGML_VULKAN=on", "SYCL": "-DGGML_SYCL=on",
                    "HIP": "-DGGML_HIP=on"}

class RpcUnavailableError(LocalR1Error):
    """This llama-cpp-python was built without llama.cpp's RPC backend."""


@dataclass(frozen=True)
class WorkerDevice:
    """One device a worker serves, as registered in this process ("RPC0", its endpoint)."""

    endpoint: str
    name: str
    description: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class ServedDevice:
    """One of this machine's devices that `serve_worker` offers ("CPU", "CUDA0")."""

    name: str
    description: str
    free_bytes: int
    total_bytes: int


def rpc_supported() -> bool:
    """Whether localr1's RPC works with this llama-cpp-python: built with llama.cpp's RPC
    backend, and a release that speaks our protocol (`rpc_problem` says which is missing)."""
    return rpc_problem() is None


def rpc_problem() -> str | None:
    """Why `localr1 worker` and `--rpc` cannot work with this llama-cpp-python, in one line
    (`reinstall_command` fixes it); None when they can."""
    import llama_cpp

    if not llama_cpp.llama_supports_rpc():
        return "this llama-cpp-python was built without llama.cpp's RPC backend"
    if llama_cpp.__version__ not in RPC_LLAMA_CPP_PYTHON:
        return (f"llama-cpp-python {visible_controls(llama_cpp.__version__)} does not speak "
                f"llama.cpp's RPC protocol {RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}.{RPC_PROTO_PATCH}"
                f" that localr1's RPC needs ({' or '.join(RPC_LLAMA_CPP_PYTHON)} does)")
    return None


def reinstall_command() -> str:
    """The pip command that builds the llama-cpp-python release of our RPC protocol with RPC,
    keeping this build's GPU."""
    from localr1.models.hardware import backend_info

    flags = ["-DGGML_RPC=on"]
    gpu_flag = _GPU_CMAKE_FLAGS.get(backend_info().name)
    if gpu_flag:
        flags.append(gpu_flag)
    return (f'CMAKE_ARGS="{" ".join(flags)}" pip install --force-reinstall --no-cache-dir '
            f"llama-cpp-python=={RPC_LLAMA_CPP_PYTHON[-1]}")


def worker_version(endpoint: str, timeout: float = PROBE_TIMEOUT) -> tuple[int, int, int]:
    """The RPC protocol version a worker answers HELLO with, within `timeout` seconds; a
    one-line WorkerError when nothing, or not an RPC worker, answers."""
    [endpoint] = parse_endpoints(endpoint)
    with _rpc_session(endpoint, timeout) as (_sock, version, _deadline):
        return version


def probe_worker(endpoint: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Check within `timeout` seconds that an RPC worker of our protocol answers at `endpoint`,
    in Python, so that a bad endpoint never reaches llama.cpp's client (which aborts)."""
    _check_version(endpoint, worker_version(endpoint, timeout))


def _check_version(endpoint: str, version: tuple[int, int, int]) -> None:
    major, minor, patch = version
    shown = f"{major}.{minor}.{patch}"
    if major != RPC_PROTO_MAJOR:
        raise WorkerError(f"{endpoint}: speaks RPC protocol {shown}, this localr1 needs "
                          f"{RPC_PROTO_MAJOR}.x")
    if minor > RPC_PROTO_MINOR:
        raise WorkerError(f"{endpoint}: speaks RPC protocol {shown}, newer than this "
                          f"localr1's {RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}.{RPC_PROTO_PATCH} "
                          "(update llama-cpp-python here)")


@contextlib.contextmanager
def _rpc_session(endpoint: str, timeout: float):
    """A connection to a worker after the HELLO exchange: (socket, version, deadline). Every
    socket failure within it, the HELLO's or a later request's, is a one-line WorkerError."""
    host, _, port = endpoint.rpartition(":")
    deadline = time.monotonic() + timeout
    address = _ipv4_address(endpoint, host, timeout)
    try:
        with socket.create_connection((address, int(port)),
                                      timeout=max(deadline - time.monotonic(), 0.001)) as sock:
            sock.sendall(struct.pack("<BQ", RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE)
                         + bytes(RPC_CONN_CAPS_SIZE))
            size = struct.unpack("<Q", _receive(sock, 8, endpoint, deadline))[0]
            if size not in (_HELLO_REPLY_SIZE, _OLD_HELLO_REPLY_SIZE):
                raise WorkerError(f"{endpoint}: not an RPC worker (it answered the RPC hello "
                                  "with something else)")
            reply = _receive(sock, size, endpoint, deadline)
            yield sock, (reply[0], reply[1], reply[2]), deadline
    except ConnectionRefusedError:
        raise WorkerError(f"{endpoint}: no worker answers (connection refused)") from None
    except TimeoutError:
        raise WorkerError(f"{endpoint}: no worker answers within {timeout:g} s") from None
    except OSError as exc:
        raise WorkerError(f"{endpoint}: no worker answers ({_reason(exc)})") from None


_MAX_WORKER_DEVICES = 64  # rpc-server serves a machine's GPUs: more is not a worker


def worker_memory(endpoints: str | Iterable[str],
                  timeout: float = PROBE_TIMEOUT) -> tuple[WorkerDevice, ...]:
    """Each worker's devices and memory within `timeout`, asked in Python as
    ggml_backend_rpc_get_device_memory asks (DEVICE_COUNT, GET_DEVICE_MEMORY): nothing is
    registered (later loads here do not offload) and a bad worker is a WorkerError (the first
    given), never a C abort. A worker this process holds answers nobody else: for those, the
    figures from when it connected."""
    endpoints = parse_endpoints(endpoints)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        asked = [pool.submit(_devices_of, endpoint, timeout) for endpoint in endpoints]
        per_worker = [answer.result() for answer in asked]
    devices = [device for worker in per_worker for device in worker]
    # Named as a fresh process's llama.cpp would number them once registered.
    return tuple(WorkerDevice(d.endpoint, f"RPC{index}", d.description, d.free_bytes,
                              d.total_bytes) for index, d in enumerate(devices))


def _devices_of(endpoint: str, timeout: float) -> tuple[WorkerDevice, ...]:
    with _lock:
        connected = _connected_devices.get(endpoint)
    if connected is not None:
        return connected
    with _rpc_session(endpoint, timeout) as (sock, version, deadline):
        _check_version(endpoint, version)
        [count] = struct.unpack("<I", _request(sock, RPC_CMD_DEVICE_COUNT, b"", 4, endpoint,
                                               deadline))
        if not 0 < count <= _MAX_WORKER_DEVICES:
            raise WorkerError(f"{endpoint}: the worker offers {count} devices")
        devices = []
        for index in range(count):
            free, total = struct.unpack("<QQ", _request(
                sock, RPC_CMD_GET_DEVICE_MEMORY, struct.pack("<I", index), 16, endpoint,
                deadline))
            devices.append(WorkerDevice(endpoint, f"RPC{index}", endpoint, free, total))
    return tuple(devices)


def _request(sock: socket.socket, command: int, payload: bytes, reply_size: int,
             endpoint: str, deadline: float) -> bytes:
    """One request and its reply of `reply_size` bytes (the protocol's framing)."""
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    sock.sendall(struct.pack("<BQ", command, len(payload)) + payload)
    size = struct.unpack("<Q", _receive(sock, 8, endpoint, deadline, "a request"))[0]
    if size != reply_size:
        raise WorkerError(f"{endpoint}: not an RPC worker of this protocol (a reply of {size} "
                          f"bytes where {reply_size} were due)")
    return _receive(sock, size, endpoint, deadline, "a request")


def _ipv4_address(endpoint: str, host: str, timeout: float) -> str:
    """The address llama.cpp's client would use (gethostbyname: IPv4, the first one), looked
    up in a thread so that a hanging lookup cannot outlast `timeout`."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv4Address(host))
    found: list = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    lookup = threading.Thread(target=look_up, name="rpc-name-lookup", daemon=True)
    lookup.start()
    lookup.join(timeout)
    if not found:
        raise WorkerError(f"{endpoint}: the name {host} did not resolve within {timeout:g} s")
    if isinstance(found[0], OSError) or not found[0]:
        why = f" ({_reason(found[0])})" if found[0] else ""
        raise WorkerError(f"{endpoint}: cannot resolve {host} to an IPv4 address{why}")
    return found[0][0][4][0]


def _receive(sock: socket.socket, size: int, endpoint: str, deadline: float,
             what: str = "the RPC hello") -> bytes:
    data = b""
    while len(data) < size:
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(size - len(data))
        except ConnectionError:  # reset: as good as closed
            chunk = b""
        except TimeoutError:  # connected, no hello back: busy (fit's note tells them apart)
            error = WorkerBusyError if what == "the RPC hello" and not data else WorkerError
            raise error(f"{endpoint}: no answer to {what} in time (busy serving another "
                        "client, or not an RPC worker)") from None
        if not chunk:
            raise WorkerError(f"{endpoint}: closed the connection at {what} (an RPC "
                              "worker of another protocol version, or not an RPC worker)")
        data += chunk
    return data


def _reason(exc: BaseException) -> str:
    return visible_controls(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)


# ---- the C side -----------------------------------------------------------------------------

_lock = threading.Lock()
_registered: dict[str, int] = {}  # endpoint -> its ggml_backend_reg_t, registered in process
_connected_devices: dict[str, tuple[WorkerDevice, ...]] = {}  # as connect_workers found them


def connect_workers(endpoints: str | Iterable[str]) -> tuple[WorkerDevice, ...]:
    """Register each worker's devices with llama.cpp (every later model load in this process
    offloads to them), after probing them all: one bad endpoint and nothing is registered.
    Idempotent per process: an endpoint already registered is neither probed nor added again
    (its open connection would keep a worker, which serves one client at a time, from
    answering a new probe)."""
    endpoints = parse_endpoints(endpoints)
    _require_rpc()
    from localr1.engine import ggml_abort

    with _lock:
        new = [endpoint for endpoint in endpoints if endpoint not in _registered]
        if new:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(new)) as pool:
                for probe in [pool.submit(probe_worker, endpoint) for endpoint in new]:
                    probe.result()  # the first failure, in the order given
        ggml_abort.watch_workers(endpoints)  # C aborts when a worker goes away later
        ggml = ggml_backend()
        add_server = _rpc_function("ggml_backend_rpc_add_server", _ADD_SERVER)
        for endpoint in new:
            reg = add_server(endpoint.encode())
            if not reg:
                raise WorkerError(f"{endpoint}: the worker offers no devices")
            ggml.backend_register(reg)
            _registered[endpoint] = reg
        devices = []
        for endpoint in endpoints:
            reg = _registered[endpoint]
            found = []
            for index in range(ggml.reg_dev_count(reg)):
                device = ggml.reg_dev_get(reg, index)
                free, total = ggml.memory(device)
                found.append(WorkerDevice(endpoint, ggml.name(device),
                                          ggml.description(device), free, total))
            _connected_devices[endpoint] = tuple(found)
            devices += found
    return tuple(devices)


def serving_devices() -> tuple[ServedDevice, ...]:
    """What `serve_worker` offers, as llama.cpp's rpc-server chooses: the GPUs, else the CPU
    (whose free memory is then this machine's available RAM, in this process too)."""
    _require_rpc()
    ggml = ggml_backend()
    return tuple(ServedDevice(ggml.name(device), ggml.description(device), *ggml.memory(device))
                 for device in _best_devices())


def serve_worker(host: str, port: int, *, threads: int, cache_dir: Path | None,
                 on_listening: Callable[[], None] | None = None) -> None:
    """Serve this machine's best device(s) to RPC clients on `host:port` (IPv4); returns
    never (a server that stops is a WorkerError). A CPU served reports this machine's available
    RAM as free (worker_ram). Ctrl+C raises KeyboardInterrupt in the calling (main) thread
    while the server thread goes on, maybe inside llama.cpp: the caller must then end the
    process with os._exit, since the interpreter's normal exit would pull the ground from
    under that thread (cli/worker.py does). `cache_dir` keeps the tensors clients send, so a
    model is not sent again (None: no cache; llama.cpp trusts a cached file unchecked).
    `on_listening` runs once the server accepts connections.

    The server owns the process: its fd 1 goes to /dev/null, since llama.cpp's server prints a
    banner and a line per connection there."""
    _require_rpc()
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        raise WorkerError(f"{visible_controls(host)}: llama.cpp's RPC server listens on an IPv4 "
                          "address only") from None
    endpoint = f"{address}:{port}"
    if cache_dir is not None:
        shown = visible_controls(str(cache_dir))
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise WorkerError(f"{shown}: not a folder (the worker's cache)") from None
        except OSError as exc:
            raise WorkerError(f"{shown}: cannot create the worker's cache folder "
                              f"({_reason(exc)})") from None
    _check_can_listen(address, port)
    from localr1.engine import ggml_abort, llama_log

    llama_log.install()  # its log (a client that is not RPC, say) stays off the terminal
    ggml_abort.install()
    devices = _best_devices()
    device_array = (ctypes.c_void_p * len(devices))(*devices)
    start_server = _rpc_function("ggml_backend_rpc_start_server", _START_SERVER)
    cache = os.fsencode(cache_dir) if cache_dir is not None else None

    def serve() -> None:
        # SIGINT must reach Python's main thread: here it would only break C's accept().
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        start_server(endpoint.encode(), cache, threads, len(devices), device_array)

    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    server = threading.Thread(target=serve, name="rpc-server", daemon=True)
    server.start()
    listening = _wait_listening(server, "127.0.0.1" if address == "0.0.0.0" else address, port)
    if listening and on_listening is not None:
        on_listening()
    server.join()
    raise WorkerError(f"{endpoint}: llama.cpp's RPC server stopped")


def _check_can_listen(address: str, port: int) -> None:
    """Bind as llama.cpp's server will (SO_REUSEADDR), so a busy port is one line here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise WorkerError(f"{address}:{port}: cannot listen ({_reason(exc)})") from None


def _wait_listening(server: threading.Thread, address: str, port: int) -> bool:
    """Whether the server thread accepts connections: True once it took one of ours (it drops
    it at once, as any client that sends nothing), False if it stopped first."""
    while server.is_alive():
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return True
        server.join(0.02)
    return False


def _require_rpc() -> None:
    problem = rpc_problem()
    if problem is not None:
        raise RpcUnavailableError(f"{problem}; rebuild it with: {reinstall_command()}")


def _best_devices() -> list[int]:
    """What llama.cpp's rpc-server serves: the GPUs, else the CPU, which from then on reports
    this machine's available RAM as free in this process (worker_ram): call it in a worker."""
    from localr1.models.hardware import local_gpu_devices

    gpus = local_gpu_devices()
    if gpus:
        return gpus
    cpu = ggml_backend().dev_by_type(DEVICE_TYPE_CPU)
    if not cpu:
        raise WorkerError("llama.cpp offers no device to serve")
    worker_ram.report_available_ram(cpu)
    return [cpu]


_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p))
_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)


def _rpc_function(name: str, prototype):
    """A function of ggml-rpc.h, from the RPC backend's registry as llama.cpp's tools get it."""
    ggml = ggml_backend()
    reg = ggml.reg_by_name(b"RPC")
    address = ggml.proc_address(reg, name.encode()) if reg else None
    if not address:
        raise RpcUnavailableError(f"llama.cpp's RPC backend has no {name}; rebuild "
                                  f"llama-cpp-python with: {reinstall_command()}")
    return prototype(address)
