"""`serve` outlives a lost RPC worker (issue #16, point 4; the app's side is
tests/tui/test_rpc_worker_lost.py): the model that uses the workers is in a child process
(engine/model_process), so a worker killed mid-answer ends each stream in flight with the line
`run` prints, the server stays up, says so while the worker is down, and loads the model again
once it is back.

Real parts: `localr1 worker` subprocesses on loopback, a real `localr1 serve` subprocess, real
HTTP. Waits are on state, never sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import httpx2 as httpx  # the openai client's HTTP library
import pytest

from tests.conftest import requires_rpc
from tests.rpc_workers import Worker, free_port, localr1_args, lost_line, wait_until

pytestmark = requires_rpc

KILL_TO_ERROR_LIMIT = 10.0  # as for `run`: the fault is told within seconds


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
        server.terminate()  # as Ctrl+C would: the model's process is closed with it
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


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
    assert error["message"] == f"generation failed: {lost_line(first.endpoint)}"
    assert took < KILL_TO_ERROR_LIMIT, took
    assert server.poll() is None  # still serving
    assert f"localr1 serve: {lost_line(first.endpoint)}" in (tmp_path / "serve.log").read_text()

    # While the worker is down each request says so, in one line, and the server stays up.
    reply = httpx.post(f"{base}/v1/chat/completions", timeout=120,
                       json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "model_load_failed"
    assert f"{first.endpoint}: no worker answers" in reply.json()["error"]["message"]
    assert httpx.get(f"{base}/health", timeout=30).json()["status"] == "no model loaded"

    # The worker back: the next request loads the model on it again and is answered.
    again = Worker(tmp_path, port=first.port)  # back after a restart
    try:
        reply = httpx.post(f"{base}/v1/chat/completions", timeout=180,
                           json={"messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 8})
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["reasoning_content"]
    finally:
        again.kill()
