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

from localr1.engine.rpc_backend import (
    RPC_PROTO_MAJOR,
    RPC_PROTO_MINOR,
    RPC_PROTO_PATCH,
    RpcUnavailableError,
    WorkerError,
    parse_endpoints,
    probe_worker,
    serving_devices,
    worker_version,
)
from tests.conftest import requires_rpc
from tests.rpc_workers import free_port

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="signals and fork are POSIX here"),
              requires_rpc]

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
# What llama.cpp's client sends first (ggml-rpc.cpp): RPC_CMD_HELLO, the size, 24 zero bytes
# of transport capabilities (plain TCP).
_HELLO = bytes([14]) + struct.pack("<Q", 24) + bytes(24)
_SERVING = re.compile(r"worker: serving \S+ \(\d+\.\d [KMGT]B free\)(, .+)? on "
                      r"(127\.0\.0\.1|0\.0\.0\.0):(\d+); Ctrl\+C stops")


def _child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONFAULTHANDLER",
                                                             "LOCALR1_DEBUG")}
    return env | {"PYTHONPATH": _PROJECT_ROOT, "LOCALR1_HOME": str(home)}


def _default_sigint() -> None:
    # A shell's background job inherits SIGINT ignored, and Python then keeps it ignored: the
    # worker must get the Ctrl+C a terminal would send.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_worker(home: Path, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "localr1", "worker", "--port", str(port), "--threads", "1",
         "--cache", str(home / "rpc-cache"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(home),
        preexec_fn=_default_sigint)


def _wait_serving(worker: subprocess.Popen, endpoint: str) -> list[str]:
    """Until a HELLO at `endpoint` gets our protocol's answer and the worker has said it
    serves; its stderr lines up to that one."""
    deadline = time.monotonic() + 120
    while True:
        try:
            probe_worker(endpoint)
            break
        except WorkerError:
            if worker.poll() is not None or time.monotonic() > deadline:
                worker.kill()
                out, err = worker.communicate()
                raise AssertionError(f"the worker never answered: {out!r} {err!r}") from None
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(0.05)  # state: the worker exiting ends the wait at once
    lines: list[str] = []
    while not lines or not _SERVING.fullmatch(lines[-1]):
        line = worker.stderr.readline()
        assert line, f"the worker stopped: {lines}"
        lines.append(line.rstrip("\n"))
    return lines


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.kill()
    worker.communicate()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    """(endpoint, the worker's first stderr line) of a worker on loopback."""
    home = tmp_path_factory.mktemp("worker-home")
    port = free_port()
    process = _start_worker(home, port)
    try:
        [line] = _wait_serving(process, f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", line
    finally:
        _stop(process)


def test_a_worker_serves_and_answers_our_protocol(worker):
    endpoint, first_line = worker
    match = _SERVING.fullmatch(first_line)
    assert match and f"127.0.0.1:{match[3]}" == endpoint, first_line
    # The worker's llama.cpp speaks the version our probe checks for.
    assert worker_version(endpoint) == (RPC_PROTO_MAJOR, RPC_PROTO_MINOR, RPC_PROTO_PATCH)
    probe_worker(endpoint)


def test_a_second_worker_on_a_busy_port_says_so(worker, tmp_path):
    endpoint, _ = worker
    port = int(endpoint.rpartition(":")[2])
    second = _start_worker(tmp_path, port)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 1
    assert out == ""
    assert err == f"Error: 127.0.0.1:{port}: cannot listen (Address already in use)\n"


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


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:50052", ("127.0.0.1:50052",)),
    (" gpu-box.local:50052 , 10.0.0.2:1,gpu-box.local:50052", ("gpu-box.local:50052",
                                                               "10.0.0.2:1")),
    (["a:1,b:2", "c:65535"], ("a:1", "b:2", "c:65535")),
    ("host:0050052", ("host:50052",)),
])
def test_endpoints_are_parsed_in_order_each_once(given, expected):
    assert parse_endpoints(given) == expected


@pytest.mark.parametrize("given, message", [
    ("127.0.0.1", "127.0.0.1: expected HOST:PORT (like 127.0.0.1:50052)"),
    (":50052", ":50052: expected HOST:PORT (like 127.0.0.1:50052)"),
    ("a:1,,b:2", "an empty RPC worker address: expected HOST:PORT[,HOST:PORT...]"),
    ([], "no RPC worker given: expected HOST:PORT[,HOST:PORT...]"),
    ("h:0", "h:0: the port must be a number from 1 to 65535"),
    ("h:65536", "h:65536: the port must be a number from 1 to 65535"),
    ("h:5e4", "h:5e4: the port must be a number from 1 to 65535"),
    ("h:\u0665", "h:\u0665: the port must be a number from 1 to 65535"),
    ("bad_host!:1", "bad_host!:1: 'bad_host!' is not a host name or an IPv4 address"),
    ("evil\x1b[2J:1", "evil\\x1b[2J:1: 'evil\\\\x1b[2J' is not a host name or an IPv4 address"),
    ("::1:50052", "::1:50052: an IPv6 address goes in brackets, and llama.cpp's RPC connects "
                  "over IPv4 only: use an IPv4 address or a host name"),
    ("[::1]:50052", "[::1]:50052: llama.cpp's RPC connects over IPv4 only: use an IPv4 "
                    "address or a host name"),
    ("[::1]", "[::1]: the port must be a number from 1 to 65535"),
    ("[nope]:1", "[nope]:1: not an IPv6 address in brackets"),
])
def test_bad_endpoints_are_one_line(given, message):
    with pytest.raises(WorkerError) as caught:
        parse_endpoints(given)
    assert str(caught.value) == message
    assert "\n" not in message


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
    serving, with a message no case expects."""
    from tests.test_hostile_cli import invoke_in_process

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
    port = free_port()
    worker = _start_worker(tmp_path, port, "--host", "0.0.0.0", "--allow-remote")
    try:
        lines = _wait_serving(worker, f"127.0.0.1:{port}")
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=60)
    finally:
        _stop(worker)
    assert worker.returncode == 130
    assert out == ""  # llama.cpp's server banner and connection lines stay off stdout
    lines += err.splitlines()
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
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    worker = _start_worker(tmp_path, port)
    try:
        [serving] = _wait_serving(worker, endpoint)
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(_HELLO)  # a client session: the server now waits on its commands
            assert len(client.recv(36)) > 0
            # A worker serves one client at a time: a probe meanwhile waits, then says why.
            with pytest.raises(WorkerError, match="busy serving another client"):
                probe_worker(endpoint, timeout=0.5)
            worker.send_signal(signal.SIGINT)
            out, err = worker.communicate(timeout=60)
    finally:
        _stop(worker)
    assert worker.returncode == 130
    assert out == ""
    assert err.splitlines() == ["", "localr1: interrupted"]  # click ends the ^C line first
    assert _SERVING.fullmatch(serving)


_CONNECT_IN_A_CHILD = """
import ctypes, json, sys
from localr1.engine.ggml_abort import ggml_function
from localr1.engine.rpc_backend import WorkerError, connect_workers

count = ggml_function("ggml_backend_dev_count")
count.restype = ctypes.c_size_t
before = count()
try:
    connect_workers([sys.argv[1], sys.argv[2]])
except WorkerError as exc:
    refused = str(exc)
after_refusal = count()
first = connect_workers(sys.argv[1])
again = connect_workers([sys.argv[1]])
print(json.dumps({"refused": refused, "counts": [before, after_refusal, count()],
                  "devices": [d.__dict__ for d in first], "same": first == again}))
"""


def test_connect_workers_registers_the_workers_devices_in_a_child(worker, tmp_path):
    endpoint, _ = worker
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
    assert 0 < device["free_bytes"] <= device["total_bytes"]
    assert report["same"]


def test_a_worker_serves_its_gpus_else_its_cpu():
    from localr1.models.hardware import backend_info

    devices = serving_devices()
    assert devices and all(0 < d.free_bytes <= d.total_bytes for d in devices)
    if not backend_info().can_offload:  # llama.cpp's rpc-server's pick: the CPU alone
        assert [d.name for d in devices] == ["CPU"]
    else:
        assert "CPU" not in [d.name for d in devices]


def test_without_rpc_the_worker_says_how_to_rebuild(monkeypatch):
    """A build without -DGGML_RPC=on (llama_supports_rpc() false): one line with the command."""
    import llama_cpp
    from click.testing import CliRunner

    from localr1.cli.main import cli

    monkeypatch.setattr(llama_cpp, "llama_supports_rpc", lambda: False)
    with pytest.raises(RpcUnavailableError):
        serving_devices()
    result = CliRunner().invoke(cli, ["worker", "--port", str(free_port())])
    assert result.exit_code == 1
    assert result.output == (
        "Error: this llama-cpp-python was built without llama.cpp's RPC backend; rebuild it "
        'with: CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python\n")


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
    from tests.rpc_workers import Worker

    before = _worker_children()
    with pytest.raises(pytest.fail.Exception, match="timed out waiting for worker"):
        Worker(tmp_path, ready_within=0)
    left = [pid for pid in _worker_children() if pid not in before]
    for pid in left:  # so that a failure here leaks nothing either
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert left == []


def _start_worker_without_cache(home: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "localr1", "worker", "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(home),
        preexec_fn=_default_sigint)


def test_ctrl_c_while_a_client_generates_exits_130_without_a_crash(tmp_path, smollm2_model):
    """The server thread is inside llama.cpp computing for `run` when Ctrl+C comes: the worker
    must end at once with 130, not tear the interpreter down under it (SIGSEGV). Without
    --cache it keeps nothing on disk."""
    from tests.rpc_workers import wait_until

    home = tmp_path / "home"
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    worker = _start_worker_without_cache(home, port)
    answer = tmp_path / "answer"
    client = None
    try:
        [serving] = _wait_serving(worker, endpoint)
        with open(answer, "wb") as stdout:
            client = subprocess.Popen(
                [sys.executable, "-m", "localr1", "run", "-m", str(smollm2_model), "--rpc",
                 endpoint, "--gpu-layers", "all", "--threads", "1", "--no-log", "--seed", "1",
                 "--temperature", "1", "--max-tokens", "4000", "Write a very long story."],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True,
                env=_child_env(tmp_path / "client-home"))
        wait_until(lambda: answer.stat().st_size > 0, "the answer to stream", timeout=180,
                   poll=client)
        worker.send_signal(signal.SIGINT)
        out, err = worker.communicate(timeout=60)
        client.wait(timeout=60)  # its worker is gone: one line and exit 1
    finally:
        _stop(worker)
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
    assert worker.returncode == 130, err
    assert out == ""
    assert err.splitlines() == ["", "localr1: interrupted"]
    assert client.returncode == 1
    assert client.stderr.read().splitlines()[-1] == \
        f"localr1: RPC worker {endpoint} stopped answering (connection refused)"
    assert _SERVING.fullmatch(serving)
    assert [path.name for path in home.rglob("*") if "rpc" in path.name] == []
