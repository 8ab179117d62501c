"""`localr1 worker` and the RPC backend's Python side: real workers (llama.cpp's RPC server in a
`python -m localr1 worker` subprocess on a free loopback port), probes of what is not one, and
`connect_workers` in a child process (registering RPC devices is process-wide: never in
pytest's own process).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.engine.ggml_devices import DEVICE_TYPE_CPU, ggml_backend
from localr1.engine.rpc_backend import (
    RPC_LLAMA_CPP_PYTHON,
    RPC_PROTO_MAJOR,
    RPC_PROTO_MINOR,
    RPC_PROTO_PATCH,
    RpcUnavailableError,
    WorkerError,
    connect_workers,
    probe_worker,
    rpc_problem,
    serving_devices,
    worker_memory,
    worker_version,
)
from localr1.models import hardware
from tests.conftest import requires_rpc
from tests.rpc_workers import Worker, free_port, wait_until

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="signals and fork are POSIX here"),
              requires_rpc]

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
# What llama.cpp's client sends first (ggml-rpc.cpp): RPC_CMD_HELLO, the size, 24 zero bytes
# of transport capabilities (plain TCP).
_HELLO = bytes([14]) + struct.pack("<Q", 24) + bytes(24)
_SERVING = re.compile(r"worker: serving \S+ \((\d+\.\d) ([KMGT])B free\)(, .+)? on "
                      r"(127\.0\.0\.1|0\.0\.0\.0):(\d+); Ctrl\+C stops")


def _child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONFAULTHANDLER",
                                                             "LOCALR1_DEBUG")}
    return env | {"PYTHONPATH": _PROJECT_ROOT, "LOCALR1_HOME": str(home), "HOME": str(home)}


def _serving_line(worker: Worker) -> str:
    """The line a worker prints once it serves (its first on stderr but for a warning)."""
    return wait_until(lambda: next((line for line in worker.stderr_lines()
                                    if line.startswith("worker: serving")), None),
                      "the serving line", timeout=30, poll=worker.process)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    """A worker on loopback, with a --cache."""
    home = tmp_path_factory.mktemp("worker-home")
    started = Worker(home, _child_env(home), args=("--cache", home / "rpc-cache"))
    try:
        yield started
    finally:
        started.kill()


def test_a_worker_serves_and_answers_our_protocol(worker):
    first_line = _serving_line(worker)
    assert worker.stderr_lines() == [first_line]
    match = _SERVING.fullmatch(first_line)
    assert match and f"127.0.0.1:{match[5]}" == worker.endpoint, first_line
    # The worker's llama.cpp speaks the version our probe checks for.
    assert worker_version(worker.endpoint) == (RPC_PROTO_MAJOR, RPC_PROTO_MINOR,
                                               RPC_PROTO_PATCH)
    probe_worker(worker.endpoint)


def test_a_second_worker_on_a_busy_port_says_so(worker, tmp_path):
    second = Worker(tmp_path, _child_env(tmp_path), port=worker.port, ready=False)
    try:
        assert second.wait_exit(120) == 1
    finally:
        second.kill()
    assert second.stdout() == ""
    assert second.stderr_lines() == [f"Error: 127.0.0.1:{worker.port}: cannot listen "
                                     "(Address already in use)"]


def test_probe_of_a_closed_port_is_one_line_at_once():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        probe_worker(f"127.0.0.1:{port}")
    assert str(caught.value) == f"127.0.0.1:{port}: no worker answers (connection refused)"
    assert time.monotonic() - started < 2


@contextlib.contextmanager
def _one_reply_server(reply: bytes, *, read_hello: bool = True):
    """A TCP server on loopback that answers one connection with `reply` and closes it;
    yields (port, the bytes it received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            if read_hello:
                while len(received) < len(_HELLO):
                    chunk = connection.recv(len(_HELLO) - len(received))
                    if not chunk:
                        break
                    received.extend(chunk)
            connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        thread.join(10)
        listener.close()


def _v7_reply(major: int, minor: int, patch: int) -> bytes:
    return struct.pack("<Q", 28) + bytes([major, minor, patch, 0]) + bytes(24)


@pytest.mark.parametrize("reply, read_hello, message", [
    (_v7_reply(6, 1, 0), True, "speaks RPC protocol 6.1.0, this localr1 needs 7.x"),
    (struct.pack("<Q", 3) + bytes([8, 0, 2]), True,
     "speaks RPC protocol 8.0.2, this localr1 needs 7.x"),
    (_v7_reply(7, 1, 0), True, "speaks RPC protocol 7.1.0, newer than this localr1's 7.0.0 "
                               "(update llama-cpp-python here)"),
    (b"", True, "closed the connection at the RPC hello (an RPC worker of another protocol "
                "version, or not an RPC worker)"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", False,
     "not an RPC worker (it answered the RPC hello with something else)"),
], ids=["major-6", "old-reply-8", "minor-newer", "closes", "ssh-banner"])
def test_a_server_that_is_not_our_worker_is_one_line_at_once(reply, read_hello, message):
    with _one_reply_server(reply, read_hello=read_hello) as (port, received):
        started = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            probe_worker(f"127.0.0.1:{port}")
        elapsed = time.monotonic() - started
    assert str(caught.value) == f"127.0.0.1:{port}: {message}"
    assert elapsed < 2
    if read_hello:
        assert bytes(received) == _HELLO  # the HELLO llama.cpp's client sends, byte for byte


def test_an_http_server_gets_no_further_than_the_time_limit():
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        started = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            probe_worker(f"127.0.0.1:{port}", timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    # It waits for a request line our HELLO never ends: the probe's own deadline ends it.
    assert str(caught.value) == (f"127.0.0.1:{port}: no answer to the RPC hello in time (busy "
                                 "serving another client, or not an RPC worker)")
    assert 0.9 < elapsed < 3


def test_a_non_loopback_host_needs_allow_remote(tmp_path):
    result = subprocess.run([sys.executable, "-m", "localr1", "worker", "--host", "0.0.0.0",
                             "--port", str(free_port())], capture_output=True, text=True,
                            env=_child_env(tmp_path), timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: --host 0.0.0.0 lets other machines reach this worker, and the RPC protocol has "
        "no authentication or encryption: add --allow-remote to accept that, or keep 127.0.0.1 "
        "and tunnel over SSH (see 'localr1 worker --help')\n")


def test_bad_worker_arguments_are_one_line(tmp_path, monkeypatch):
    """The hostile values of tests/test_hostile_cli.py (which skips `worker`: a good argument
    serves until Ctrl+C), in process; a port held here keeps any that got through from
    serving, with a message no case expects. A --cache case gets as far as choosing the
    devices, which would make pytest's own CPU device report the available RAM (worker_ram):
    that patch is left out here (test_a_worker_serves_its_gpus_else_its_cpu makes it, in a
    child)."""
    from localr1.engine import worker_ram
    from tests.test_hostile_cli import invoke_in_process

    monkeypatch.setattr(worker_ram, "report_available_ram", lambda device: None)
    monkeypatch.chdir(tmp_path)
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    values = [str(2**63), "-1", "nan", "inf", "", "x" * 300, str(fifo), "/dev/full",
              str(folder)]
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = str(held.getsockname()[1])
        cases = [(["--host", value], 2) for value in values]
        cases += [(["--port", value], 2) for value in values if value != port]
        cases += [(["--threads", value], 2) for value in values]
        cases += [(["--cache", value], 1)
                  for value in (str(fifo), "/dev/full", "x" * 300, "/dev/full/rpc")]
        for args, code in cases:
            args = ["worker", "--port", port, *args]
            result = invoke_in_process(args)
            lines = [line for line in result[2].splitlines() if line.strip()]
            assert result[0] == code and result[1] == "" and len(lines) == 1, (args, result)
            assert "cannot listen" not in lines[0], (args, lines)
    assert invoke_in_process(["worker", "--cache", "/dev/full/rpc"])[2] == (
        "Error: /dev/full/rpc: cannot create the worker's cache folder (Not a directory)\n")
    assert invoke_in_process(["worker", "--cache", "/dev/full"])[2] == (
        "Error: /dev/full: not a folder (the worker's cache)\n")


def test_allow_remote_warns_then_serves_and_ctrl_c_stops_it(tmp_path):
    worker = Worker(tmp_path, _child_env(tmp_path), args=("--host", "0.0.0.0", "--allow-remote"))
    port = worker.port
    try:
        _serving_line(worker)
        assert worker.interrupt() == 130
    finally:
        worker.kill()
    assert worker.stdout() == ""  # llama.cpp's server banner and connection lines stay off it
    lines = worker.stderr_lines()
    assert lines[0] == (f"warning: listening on 0.0.0.0:{port}. llama.cpp's RPC protocol has "
                        "no authentication and no encryption: anyone who can reach this port "
                        "can run code on this machine's backend and read or write its memory.")
    assert lines[1:4] == ["Safer: keep the worker on 127.0.0.1 and tunnel from the other "
                          "machine:",
                          f"  ssh -N -L {port}:127.0.0.1:{port} user@this-machine",
                          f"  localr1 run --rpc 127.0.0.1:{port} ..."]
    assert _SERVING.fullmatch(lines[4]) and lines[4].endswith(f"0.0.0.0:{port}; Ctrl+C stops")
    assert lines[5:] == ["", "localr1: interrupted"]  # click ends the ^C line first


def test_ctrl_c_stops_a_worker_that_serves_a_client(tmp_path):
    worker = Worker(tmp_path, _child_env(tmp_path))
    try:
        serving = _serving_line(worker)
        with socket.create_connection(("127.0.0.1", worker.port)) as client:
            client.sendall(_HELLO)  # a client session: the server now waits on its commands
            assert len(client.recv(36)) > 0
            # A worker serves one client at a time: a probe meanwhile waits, then says why.
            with pytest.raises(WorkerError, match="busy serving another client"):
                probe_worker(worker.endpoint, timeout=0.5)
            assert worker.interrupt() == 130
    finally:
        worker.kill()
    assert worker.stdout() == ""
    # click ends the ^C line first
    assert worker.stderr_lines() == [serving, "", "localr1: interrupted"]
    assert _SERVING.fullmatch(serving)


_CONNECT_IN_A_CHILD = """
import json, sys
from localr1.engine.ggml_devices import ggml_backend
from localr1.engine.rpc_backend import WorkerError, connect_workers
from localr1.models.hardware import local_gpu_devices

ggml = ggml_backend()
count = ggml.dev_count
local_gpus = [ggml.name(device) for device in local_gpu_devices()]
before = count()
try:
    connect_workers([sys.argv[1], sys.argv[2]])
except WorkerError as exc:
    refused = str(exc)
after_refusal = count()
first = connect_workers(sys.argv[1])
again = connect_workers([sys.argv[1]])
same = [(d.endpoint, d.name, d.total_bytes) for d in first] == \
    [(d.endpoint, d.name, d.total_bytes) for d in again]  # free: what is available now
print(json.dumps({"refused": refused, "counts": [before, after_refusal, count()],
                  "devices": [d.__dict__ for d in first], "same": same,
                  "local_gpus": [local_gpus, [ggml.name(d) for d in local_gpu_devices()]]}))
"""


def test_connect_workers_registers_the_workers_devices_in_a_child(worker, tmp_path):
    endpoint = worker.endpoint
    closed = f"127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-c", _CONNECT_IN_A_CHILD, endpoint, closed],
                            capture_output=True, text=True, env=_child_env(tmp_path),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # One worker down: nothing registered, and C never saw either endpoint.
    assert report["refused"] == f"{closed}: no worker answers (connection refused)"
    before, after_refusal, after = report["counts"]
    assert after_refusal == before and after == before + 1  # the second call added nothing
    [device] = report["devices"]
    assert device["endpoint"] == endpoint and device["description"] == endpoint
    assert device["name"].startswith("RPC")
    assert 0 < device["free_bytes"] < device["total_bytes"]
    assert report["same"]
    # A worker's device is a GPU to llama.cpp, but not one of this machine's.
    local_before, local_after = report["local_gpus"]
    assert local_after == local_before


_SERVING_IN_A_CHILD = """
import json
from localr1.engine.rpc_backend import serving_devices

print(json.dumps([d.__dict__ for d in serving_devices()]))
"""


def test_a_worker_serves_its_gpus_else_its_cpu(tmp_path):
    """In a child: a CPU served reports the available RAM from then on, in its whole process;
    pytest's own CPU device keeps llama.cpp's figure."""
    result = subprocess.run([sys.executable, "-c", _SERVING_IN_A_CHILD], capture_output=True,
                            text=True, env=_child_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert devices and all(0 < d["free_bytes"] <= d["total_bytes"] for d in devices)
    if not hardware.backend_info().can_offload:  # llama.cpp's rpc-server's pick: the CPU alone
        assert [d["name"] for d in devices] == ["CPU"]
    else:
        assert "CPU" not in [d["name"] for d in devices]
    ggml = ggml_backend()
    free, total = ggml.memory(ggml.dev_by_type(DEVICE_TYPE_CPU))
    assert free == total  # llama.cpp's CPU device, unpatched here (Linux and macOS)


_SLACK = 1024**3 // 4  # what other programs may allocate or free while we ask


@pytest.mark.skipif(hardware.backend_info().can_offload, reason="a GPU build serves its GPUs")
def test_a_cpu_worker_reports_this_machines_available_ram(worker):
    """llama.cpp's CPU device reports the total RAM as free: a client would give a busy worker
    layers it cannot hold. The worker reports the available RAM instead, to clients (asked as
    llama.cpp asks) and on its first line."""
    before = hardware.memory_info()
    [device] = worker_memory(worker.endpoint)
    after = hardware.memory_info().available_bytes
    assert device.total_bytes == before.total_bytes
    assert device.free_bytes < device.total_bytes
    assert min(before.available_bytes, after) - _SLACK <= device.free_bytes \
        <= max(before.available_bytes, after) + _SLACK
    shown = _SERVING.fullmatch(_serving_line(worker))
    assert float(shown[1]) < before.total_bytes / 1000**{"K": 1, "M": 2, "G": 3, "T": 4}[shown[2]]


def test_without_rpc_the_worker_says_how_to_rebuild(monkeypatch):
    """A build without -DGGML_RPC=on (llama_supports_rpc() false): one line with the command.
    A port held here: a worker that got past the check could not serve on it either."""
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_rpc", lambda: False)
    with pytest.raises(RpcUnavailableError):
        serving_devices()
    with socket.create_server(("127.0.0.1", 0)) as held:
        result = CliRunner().invoke(cli, ["worker", "--port", str(held.getsockname()[1])])
    assert result.exit_code == 1
    assert result.output == (
        "Error: this llama-cpp-python was built without llama.cpp's RPC backend; rebuild it "
        'with: CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python==0.3.36\n")


@pytest.mark.parametrize("version", ["0.3.35", "0.3.37", "0.3.16"])
def test_another_llama_cpp_python_release_is_refused_in_one_line(monkeypatch, version):
    """The RPC protocol is a C macro no symbol exports, and it changed in nearly every release
    (0.3.35 speaks 5.0.0, this module 7.0.0): a release whose protocol is not ours is refused
    before C meets a worker, with the command that installs the one that speaks it."""
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "__version__", version)
    problem = (f"llama-cpp-python {version} does not speak llama.cpp's RPC protocol 7.0.0 that "
               "localr1's RPC needs (0.3.36 does)")
    assert rpc_problem() == problem
    refusal = (f"{problem}; rebuild it with: "
               'CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-cache-dir '
               "llama-cpp-python==0.3.36")
    for refused in (serving_devices, lambda: connect_workers("127.0.0.1:1")):
        with pytest.raises(RpcUnavailableError) as caught:
            refused()
        assert str(caught.value) == refusal
    with socket.create_server(("127.0.0.1", 0)) as held:
        result = CliRunner().invoke(cli, ["worker", "--port", str(held.getsockname()[1])])
    assert (result.exit_code, result.output) == (1, f"Error: {refusal}\n")


def test_the_release_here_speaks_our_protocol(worker):
    """What the table says of the installed release is what its own server answers."""
    import llama_cpp

    assert llama_cpp.__version__ in RPC_LLAMA_CPP_PYTHON
    assert rpc_problem() is None
    assert worker_version(worker.endpoint) == (RPC_PROTO_MAJOR, RPC_PROTO_MINOR, RPC_PROTO_PATCH)


def _worker_children() -> list[int]:
    """Our child processes that run `localr1 worker` (reaped ones are gone from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if parent == os.getpid() and b"localr1" in args and b"worker" in args:
            found.append(int(entry.name))
    return found


def test_a_test_worker_that_is_not_ready_in_time_is_not_left_running(tmp_path):
    before = _worker_children()
    with pytest.raises(pytest.fail.Exception, match="timed out waiting for worker"):
        Worker(tmp_path, ready_within=0)
    left = [pid for pid in _worker_children() if pid not in before]
    for pid in left:  # so that a failure here leaks nothing either
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert left == []


def _run_on(endpoint: str, model: Path, stdout, home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "localr1", "run", "-m", str(model), "--rpc", endpoint,
         "--gpu-layers", "all", "--threads", "1", "--no-log", *args],
        stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True,
        env=_child_env(home))


def test_a_worker_with_cache_keeps_the_large_tensors_a_client_sends(worker, smollm2_model,
                                                                     tmp_path):
    cache = worker.stdout_file.parent / "rpc-cache"
    client = _run_on(worker.endpoint, smollm2_model, subprocess.DEVNULL, tmp_path,
                     "--max-tokens", "1", "hi")
    try:
        assert client.wait(timeout=180) == 0, client.stderr.read()
    finally:
        if client.poll() is None:
            client.kill()
        client.wait()
        client.stderr.close()
    # SmolLM2's output tensor (30 MB) is over llama.cpp's 10 MB threshold.
    assert [path.stat().st_size > 10 * 1000**2 for path in cache.iterdir()] == [True]


def test_ctrl_c_while_a_client_generates_exits_130_without_a_crash(tmp_path, smollm2_model):
    """The server thread is inside llama.cpp computing for `run` when Ctrl+C comes: the worker
    must end at once with 130, not tear the interpreter down under it (SIGSEGV). Without
    --cache it keeps nothing on disk (its working folder and homes are its log folder)."""
    home = tmp_path / "home"
    home.mkdir()
    worker = Worker(home, _child_env(home))
    answer = tmp_path / "answer"
    client = None
    try:
        serving = _serving_line(worker)
        with open(answer, "wb") as stdout:
            client = _run_on(worker.endpoint, smollm2_model, stdout, tmp_path / "client-home",
                             "--seed", "1", "--temperature", "1", "--max-tokens", "4000",
                             "Write a very long story.")
        wait_until(lambda: answer.stat().st_size > 0, "the answer to stream", timeout=180,
                   poll=client)
        assert worker.interrupt() == 130
        client_status = client.wait(timeout=60)  # its worker is gone: one line and exit 1
        client_err = client.stderr.read()
    finally:
        worker.kill()
        if client is not None:
            if client.poll() is None:
                client.kill()
            client.wait()
            client.stderr.close()
    assert worker.stdout() == ""
    assert worker.stderr_lines() == [serving, "", "localr1: interrupted"]
    assert client_status == 1
    assert client_err.splitlines()[-1] == \
        f"localr1: RPC worker {worker.endpoint} stopped answering (connection refused)"
    assert sorted(path.name for path in home.rglob("*")) == sorted(
        [worker.stdout_file.name, worker.stderr_file.name])
