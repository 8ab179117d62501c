"""`localr1 worker` subprocesses on free loopback ports, for the RPC tests.

Clients that register RPC devices run as subprocesses too: registering is process-global, and
would make every later model load in the pytest process offload to the workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localr1.engine import rpc_backend


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
        if poll is not None:
            try:  # waits on the process itself between checks
                poll.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"exited with {poll.returncode} while waiting for {what}")
    pytest.fail(f"timed out waiting for {what}")


class Worker:
    """A `localr1 worker` subprocess on a free loopback port, its output in a log file; ready
    once it answers our protocol's HELLO."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None,
                 ready_within: float = 120.0) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log = log_dir / f"worker-{self.port}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                localr1_args("worker", "--port", self.port, "--threads", 1),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env if env is not None else os.environ.copy())
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

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


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
