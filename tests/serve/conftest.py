"""A real `localr1 serve` on 127.0.0.1 (a free port, in a thread of the test process) and the
real `openai` client pointed at it."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from localr1.config import Settings
from localr1.models.choice import ChosenModel
from localr1.paths import app_paths
from localr1.serve.server import ServeOptions, Server


@dataclass
class Running:
    server: Server
    base_url: str
    thread: threading.Thread

    def client(self, api_key: str = "unused", **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, max_retries=0,
                             **kwargs)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base_url: str, deadline_s: float = 60.0) -> None:
    """Poll GET /health until it answers 200 (the model is loaded and the port is open)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        threading.Event().wait(0.02)  # the listening socket is not up yet
    raise AssertionError(f"{base_url}/health never answered 200")


@pytest.fixture
def serve():
    """serve(model_path, name=..., **ServeOptions fields) -> Running; stopped after the test."""
    running: list[Running] = []

    def start(model: Path, name: str | None = None, **options) -> Running:
        options = {"parallel": 2, "n_ctx_per_sequence": 1024, "threads": 2, **options}
        port = free_port()
        chosen = ChosenModel(model, name or model.stem, installed=name is not None)
        server = Server(chosen, Settings(), app_paths(),
                        ServeOptions(host="127.0.0.1", port=port, **options))
        server.start_model()
        handle = Running(server, f"http://127.0.0.1:{port}", server.run_in_thread())
        running.append(handle)
        wait_healthy(handle.base_url)
        return handle

    yield start
    for handle in running:
        handle.stop()


@pytest.fixture
def models_dir() -> Path:
    """The isolated home's models folder (GGUFs linked here are installed)."""
    path = app_paths().models_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def install(model: Path, models_dir: Path, name: str) -> Path:
    link = models_dir / f"{name}.gguf"
    link.symlink_to(model)
    return link


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """A raw request (what the openai client would never send): (status, JSON body)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(predicate, what: str) -> None:
    """Poll server state until `predicate()`; the bound only turns a hang into a failure."""
    pause = threading.Event()
    for _ in range(6000):
        if predicate():
            return
        pause.wait(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(scope="module")
def long_loop_model(tmp_path_factory):
    """Reasons for thousands of tokens: a request still open when something else happens."""
    from tests.fixtures.scripted_models import build_scripted_model

    return build_scripted_model(tmp_path_factory.mktemp("loop8k") / "loop.gguf", "loop",
                                context_length=8192)
