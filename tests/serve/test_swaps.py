"""Model swaps under load: each swap serves every request waiting for it before the next one
(no ping-pong), a swap whose fallback fails too leaves the server idle (not spinning), a request
that names no model stays on the model in memory, and waiters hold no shared threads."""

from __future__ import annotations

import shutil
import threading

import httpx2 as httpx

from localr1.errors import LocalR1Error
from tests.serve.conftest import install
from tests.serve.conftest import wait_for as _wait_for

HI = [{"role": "user", "content": "hi"}]



def _health(running) -> dict:
    return httpx.get(f"{running.base_url}/health", timeout=60).json()



def _record_loads(running, fail: str | None = None) -> list[str]:
    scheduler = running.server.scheduler
    loads: list[str] = []
    load = scheduler._load

    def recording(chosen):
        loads.append(chosen.name)
        if chosen.name == fail:
            raise LocalR1Error(f"not enough memory for {fail} (simulated)")
        return load(chosen)

    scheduler._load = recording
    return loads


class _Requests:
    """Chat requests in threads; their (status, body) by label."""

    def __init__(self, running) -> None:
        self.url = f"{running.base_url}/v1/chat/completions"
        self.answers: dict[str, tuple[int, dict]] = {}
        self.threads: list[threading.Thread] = []

    def send(self, label: str, body: dict) -> None:
        def post() -> None:
            response = httpx.post(self.url, json=body, timeout=300)
            self.answers[label] = (response.status_code, response.json())

        thread = threading.Thread(target=post)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(300)


def _hold_the_slot(running, model: str):
    """A stream that reasons until closed: the model in memory stays busy."""
    stream = httpx.stream("POST", f"{running.base_url}/v1/chat/completions", timeout=300,
                          json={"model": model, "messages": HI, "stream": True})
    response = stream.__enter__()
    next(response.iter_lines())
    return stream


def test_requests_for_two_models_swap_once_each(serve, models_dir, long_loop_model,
                                                r1_prefill_model, r1_original_model):
    first = install(long_loop_model, models_dir, "ml")
    install(r1_prefill_model, models_dir, "ma")
    install(r1_original_model, models_dir, "mb")
    running = serve(first, name="ml", parallel=2, n_ctx_per_sequence=4096)
    loads = _record_loads(running)
    holder = _hold_the_slot(running, "ml")
    requests = _Requests(running)
    for index in range(4):
        for model in ("ma", "mb"):
            requests.send(f"{model}{index}", {"model": model, "messages": HI,
                                              "max_tokens": 30})
    _wait_for(lambda: _health(running)["waiting"] == 8, "eight requests waiting")
    holder.__exit__(None, None, None)
    requests.join()
    assert sorted(loads) == ["ma", "mb"]  # not ma, mb, ma, mb, ...
    assert [status for status, _ in requests.answers.values()] == [200] * 8


def test_a_swap_whose_fallback_fails_leaves_the_server_idle(serve, models_dir,
                                                            r1_prefill_model,
                                                            r1_original_model):
    first = models_dir / "mc.gguf"
    shutil.copy(r1_prefill_model, first)
    install(r1_prefill_model, models_dir, "ma")
    install(r1_original_model, models_dir, "mb")
    running = serve(first, name="mc", parallel=1)
    loads = _record_loads(running, fail="mb")
    first.unlink()  # `localr1 rm mc` while serving: going back to mc fails too
    status, body = _post(running, {"model": "mb", "messages": HI})
    assert status == 503 and body["error"]["code"] == "model_load_failed"
    _wait_for(lambda: _health(running)["status"] == "no model loaded", "the server idle")
    assert loads == ["mb", "mc"]  # one try each, no retry loop
    status, body = _post(running, {"model": "ma", "messages": HI})
    assert status == 200 and body["model"] == "ma"
    assert _health(running)["status"] == "ok"


def test_a_request_without_a_model_stays_on_the_model_in_memory(serve, models_dir,
                                                                r1_prefill_model,
                                                                r1_original_model):
    first = install(r1_prefill_model, models_dir, "ma")
    install(r1_original_model, models_dir, "mb")
    running = serve(first, name="ma", parallel=1)
    loads = _record_loads(running)
    assert _post(running, {"model": "mb", "messages": HI})[1]["model"] == "mb"
    status, body = _post(running, {"messages": HI})
    assert status == 200 and body["model"] == "mb"
    assert loads == ["mb"]


def test_models_answer_while_many_requests_wait_for_a_swap(serve, models_dir,
                                                           long_loop_model, r1_prefill_model):
    first = install(long_loop_model, models_dir, "ml")
    install(r1_prefill_model, models_dir, "ma")
    running = serve(first, name="ml", parallel=1, n_ctx_per_sequence=8192)
    holder = _hold_the_slot(running, "ml")
    requests = _Requests(running)
    for index in range(12):  # more than the default thread pool's workers on a small machine
        requests.send(f"ma{index}", {"model": "ma", "messages": HI, "max_tokens": 5})
    _wait_for(lambda: _health(running)["waiting"] == 12, "twelve requests waiting")
    # Before the fix this waited for the swap: every default-pool thread held by a waiter.
    models = httpx.get(f"{running.base_url}/v1/models", timeout=30)
    assert models.status_code == 200
    holder.__exit__(None, None, None)
    requests.join()
    assert [status for status, _ in requests.answers.values()] == [200] * 12


def _post(running, body: dict) -> tuple[int, dict]:
    response = httpx.post(f"{running.base_url}/v1/chat/completions", json=body, timeout=300)
    return response.status_code, response.json()
