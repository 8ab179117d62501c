"""The TUI and `serve` outlive a lost RPC worker (issue #16, point 4): the model that uses the
workers is in a child process (engine/model_process); its end fails the turn or the requests
in flight with the line `run` prints, the partial answer stays, and the next turn or request
loads the model again once the worker is back.

Real parts: `localr1 worker` subprocesses on loopback, a real `localr1 serve` subprocess, the
real app driven by Textual's pilot (its model in a spawned child: registering RPC devices never
happens in pytest's process), real SQLite. Waits are on state, never sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx  # the openai client's HTTP library
import pytest

from tests.conftest import requires_rpc
from tests.fixtures import scripted_models as sm
from tests.rpc_workers import Worker, free_port, localr1_args, wait_until

pytestmark = requires_rpc

KILL_TO_ERROR_LIMIT = 10.0  # as for `run`: the fault is told within seconds


@pytest.fixture(scope="module")
def long_loop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thinks on without end, with room for thousands of tokens."""
    return sm.build_scripted_model(tmp_path_factory.mktemp("front-ends") / "loop-8k.gguf",
                                   "loop", context_length=8192)


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        started.extend(Worker(tmp_path) for _ in range(2))
        yield started
    finally:
        for worker in started:
            worker.kill()


def worker_again(worker: Worker, log_dir: Path) -> subprocess.Popen:
    """A new `localr1 worker` on a killed worker's port (the worker back after a restart)."""
    with open(log_dir / f"worker-{worker.port}-again.log", "wb") as log:
        process = subprocess.Popen(localr1_args("worker", "--port", worker.port,
                                                "--threads", 1),
                                   stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        wait_until(worker.answers, f"the worker back on {worker.endpoint}", poll=process)
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def lost_line(worker: Worker) -> str:
    return f"RPC worker {worker.endpoint} stopped answering (connection refused)"


# ---- serve -------------------------------------------------------------------------------


@pytest.fixture()
def rpc_server(workers, long_loop_model, tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            localr1_args("serve", "-m", long_loop_model, "--port", port, "--parallel", 2,
                         "--ctx", 4096, "--threads", 1, "--gpu-layers", "all", "--rpc",
                         ",".join(worker.endpoint for worker in workers)),
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "localr1 serve:" in log.read_text(), "the server to start",
                   timeout=180, poll=server)
        yield base, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        finally:
            stop(server)


def test_serve_fails_the_streams_in_flight_and_stays_up_when_a_worker_dies(
        rpc_server, workers, tmp_path):
    base, server = rpc_server
    first = workers[0]
    body = {"messages": [{"role": "user", "content": "think on"}], "stream": True}
    chunks, error, killed_at = [], None, None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line.removeprefix("data: "))
            if "error" in data:
                error, took = data["error"], time.monotonic() - (killed_at or 0.0)
                break
            chunks.append(data)
            if len(chunks) == 30:
                first.kill()
                killed_at = time.monotonic()
    assert error is not None, "the stream ended without saying why"
    assert error["message"] == f"generation failed: {lost_line(first)}"
    assert took < KILL_TO_ERROR_LIMIT, took
    assert server.poll() is None  # still serving

    # While the worker is down each request says so, in one line, and the server stays up.
    reply = httpx.post(f"{base}/v1/chat/completions", timeout=120,
                       json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "model_load_failed"
    assert f"{first.endpoint}: no worker answers" in reply.json()["error"]["message"]
    assert httpx.get(f"{base}/health", timeout=30).status_code in (200, 503)

    # The worker back: the next request loads the model on it again and is answered.
    again = worker_again(first, tmp_path)
    try:
        reply = httpx.post(f"{base}/v1/chat/completions", timeout=180,
                           json={"messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 8})
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["reasoning_content"]
    finally:
        stop(again)
