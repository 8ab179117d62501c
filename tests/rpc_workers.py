"""`localr1 worker` subprocesses on free loopback ports, for the RPC tests.

Clients that register RPC devices run as subprocesses too: registering is process-global, and
would make every later model load in the pytest process offload to the workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localr1.engine import rpc_backend
from localr1.paths import app_paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def localr1_args(*args: object) -> list[str]:
    return [sys.executable, "-m", "localr1", *map(str, args)]


def wait_until(condition, what: str, timeout: float = 120.0, poll: subprocess.Popen | None = None):
    """Return condition()'s first truthy value; fail after `timeout` or if `poll` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if poll is None:
            time.sleep(0.02)  # the poll interval: no busy loop on shared cores
            continue
        try:  # waits on the process itself between checks
            poll.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"exited with {poll.returncode} while waiting for {what}")
    pytest.fail(f"timed out waiting for {what}")


class Worker:
    """A `localr1 worker` subprocess on a free loopback port (or `port`), run in `log_dir`
    with `args` after its port and threads, its stdout and stderr in files there; ready once it
    answers our protocol's HELLO (`ready=False`: not waited for, as one expected to fail)."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None,
                 ready_within: float = 120.0, *, args: tuple[object, ...] = (),
                 port: int | None = None, ready: bool = True) -> None:
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.stdout_file = log_dir / f"worker-{self.port}.out"
        self.stderr_file = log_dir / f"worker-{self.port}.err"
        with open(self.stdout_file, "wb") as stdout, open(self.stderr_file, "wb") as stderr:
            self.process = subprocess.Popen(
                localr1_args("worker", "--port", self.port, "--threads", 1, *args),
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=log_dir,
                env=env if env is not None else os.environ.copy(),
                preexec_fn=_default_sigint if os.name == "posix" else None)
        if not ready:
            return
        try:
            wait_until(self.answers, f"worker on {self.endpoint}", timeout=ready_within,
                       poll=self.process)
        except BaseException:  # pytest.fail is one: no caller holds the process to kill it
            self.kill()
            raise

    def answers(self) -> bool:
        try:
            rpc_backend.probe_worker(self.endpoint, timeout=5.0)  # pure Python: safe here
        except rpc_backend.WorkerError:
            return False
        return True

    def stdout(self) -> str:
        return self.stdout_file.read_text(encoding="utf-8")

    def stderr_lines(self) -> list[str]:
        return self.stderr_file.read_text(encoding="utf-8").splitlines()

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Its exit status; killed (and the test failed) if it runs past `timeout`."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the worker on {self.endpoint} still ran after {timeout:g} s")

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl+C, as a terminal sends it; its exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def _default_sigint() -> None:
    # A shell's background job inherits SIGINT ignored, and Python then keeps it ignored: the
    # worker must get the Ctrl+C a terminal would send.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two workers on free loopback ports with their own home folder; their endpoints. Made a
    module-scoped fixture where used: `workers = pytest.fixture(scope="module")(two_workers)`."""
    home = tmp_path_factory.mktemp("worker-home")
    env = {**os.environ, "LOCALR1_HOME": str(home)}
    started: list[Worker] = []
    try:
        started.extend(Worker(home, env) for _ in range(2))
        yield started[0].endpoint, started[1].endpoint
    finally:
        for worker in started:
            worker.kill()


@contextlib.contextmanager
def localr1_process(*args: object, stdout: Path | None = None,
                    stderr: Path | None = None) -> Iterator[subprocess.Popen]:
    """`localr1 ARGS` as a subprocess (an RPC client), its output in files (default: dropped);
    killed and waited for on the way out."""
    with open(stdout or os.devnull, "wb") as out, open(stderr or os.devnull, "wb") as err:
        process = subprocess.Popen(localr1_args(*args), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=err, env=os.environ.copy())
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def short_and_long_prompts(tmp_path: Path) -> Path:
    """A batch input: "short" (8 tokens), then "long" (the loop model thinks on)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "short", "prompt": "hi", "params": {"max_tokens": 8}})
                       + "\n" + json.dumps({"id": "long", "prompt": "think on"}) + "\n")
    return prompts


def lost_line(endpoint: str) -> str:
    """What every front end says of a worker killed mid-answer (without `localr1: `)."""
    return f"RPC worker {endpoint} stopped answering (connection refused)"


def assistant_rows() -> list[tuple[int, int, str, str | None, str | None]]:
    """(id, conversation_id, content, reasoning, finish_reason) of every saved answer."""
    db_path = app_paths().db_path
    if not db_path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT id, conversation_id, content, reasoning, finish_reason "
                              "FROM messages WHERE role = 'assistant'").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return []


def single_line(path: Path) -> str:
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def rpc_options(*endpoints: str) -> list[str]:
    # Every layer on the workers (the split follows each worker's available RAM: the first
    # worker always holds a layer of the scripted model), so each token goes through them.
    return ["--rpc", ",".join(endpoints), "--gpu-layers", "all", "--threads", "1"]


@dataclass
class BatchFault:
    returncode: int
    took: float  # seconds from the fault to the batch's exit
    stderr: Path
    records: Path


def batch_with_a_fault(workers: list[Worker], model: Path, tmp_path: Path, fault,
                       max_tokens: int) -> BatchFault:
    """`batch` of "short" then "long" on the workers; once "short" is written (the second
    record decoding), `fault(first worker)`; the batch's exit."""
    first, second = workers
    prompts = short_and_long_prompts(tmp_path)
    records, err = tmp_path / "records.jsonl", tmp_path / "stderr"
    with localr1_process("batch", prompts, "-o", records, "-m", model,
                         *rpc_options(first.endpoint, second.endpoint), "--max-tokens",
                         max_tokens, stderr=err) as client:
        wait_until(lambda: records.exists() and '"short"' in records.read_text(),
                   "the first record", timeout=180, poll=client)
        fault(first)
        faulted_at = time.monotonic()
        returncode = client.wait(timeout=60)
    return BatchFault(returncode, time.monotonic() - faulted_at, err, records)
