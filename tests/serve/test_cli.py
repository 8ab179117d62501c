"""`localr1 serve` as users start it: a subprocess, its warning, its key, Ctrl+C."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.fixtures import scripted_models as sm
from tests.serve.conftest import free_port, http, wait_healthy


def test_serve_command_answers_with_a_key_and_stops_on_ctrl_c(r1_prefill_model):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localr1", "serve", "-m", str(r1_prefill_model), "--host",
         "0.0.0.0", "--port", str(port), "--ctx", "512", "--parallel", "2", "--threads", "2"],
        stderr=subprocess.PIPE, text=True, env={**os.environ,
                                                "LOCALR1_API_KEY": "k3y"})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        assert http("GET", f"{base}/v1/models")[0] == 401
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k3y", max_retries=0)
        reply = client.chat.completions.create(
            model=r1_prefill_model.stem, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == sm.ANSWER_TEXT
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr  # Ctrl+C, as for every localr1 command
    assert stderr.rstrip().endswith("localr1: interrupted")
    assert "warning" not in stderr  # a key is set: listening on 0.0.0.0 is deliberate
    assert f"on http://0.0.0.0:{port}/v1" in stderr


def test_serve_warns_when_listening_beyond_this_machine_without_a_key(r1_prefill_model):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localr1", "serve", "-m", str(r1_prefill_model), "--host",
         "0.0.0.0", "--port", str(port), "--ctx", "512", "--parallel", "1"],
        stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    [warning] = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert "without --api-key" in warning


def test_serve_without_a_model_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "localr1", "serve"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "no model" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_busy_port_is_one_line_and_exit_1(r1_prefill_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "localr1", "serve", "-m", str(r1_prefill_model), "--port",
             str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")  # as every error


def test_port_0_prints_the_port_the_system_chose(r1_prefill_model):
    process = subprocess.Popen(
        [sys.executable, "-m", "localr1", "serve", "-m", str(r1_prefill_model), "--port", "0",
         "--ctx", "512", "--parallel", "1"], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        while line and not line.startswith("localr1 serve:"):
            line = process.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/v1", line).group(1))
        assert port != 0
        wait_healthy(f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_the_bench_notices_a_server_that_died():
    spec = importlib.util.spec_from_file_location(
        "serve_throughput", Path(__file__).parents[2] / "bench" / "serve_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(60)
    with pytest.raises(SystemExit, match="exited with status 3"):
        bench.wait_healthy(f"http://127.0.0.1:{free_port()}", dead)
