"""Stopping the server with requests open: each stream ends with its finish chunk and [DONE],
a request waiting for a swap hears 503 and no model is loaded on the way out."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx2 as httpx

from localr1.serve.scheduler import Ticket
from tests.serve.conftest import install
from tests.serve.conftest import wait_for as _wait_for

HI = [{"role": "user", "content": "think"}]



def _health(base_url: str) -> dict:
    return httpx.get(f"{base_url}/health", timeout=60).json()



def test_stopping_ends_an_open_stream_with_its_finish_chunk_and_done(serve, long_loop_model):
    running = serve(long_loop_model, parallel=1, n_ctx_per_sequence=8192)
    body = {"model": "loop", "messages": HI, "stream": True}
    with httpx.stream("POST", f"{running.base_url}/v1/chat/completions", json=body,
                      timeout=120) as response:
        lines = response.iter_lines()
        data = [line for line in (next(lines) for _ in range(6)) if line.startswith("data:")]
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        data += [line for line in lines if line.startswith("data:")]
    stopper.join(60)
    assert not stopper.is_alive() and not running.thread.is_alive()
    assert data[-1] == "data: [DONE]"
    last = json.loads(data[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "length"
    assert not running.server.scheduler._thread.is_alive()


def test_a_request_waiting_for_a_swap_hears_503_and_nothing_loads(serve, models_dir,
                                                                 long_loop_model,
                                                                 r1_prefill_model):
    first = install(long_loop_model, models_dir, "ml")
    install(r1_prefill_model, models_dir, "ma")
    running = serve(first, name="ml", parallel=1, n_ctx_per_sequence=8192)
    scheduler = running.server.scheduler
    loads = []
    load = scheduler._load
    scheduler._load = lambda chosen: (loads.append(chosen.name), load(chosen))[1]
    url = f"{running.base_url}/v1/chat/completions"
    answers = {}

    def ask(model: str) -> None:
        response = httpx.post(url, json={"model": model, "messages": HI}, timeout=120)
        answers[model] = (response.status_code, response.json())

    threads = [threading.Thread(target=ask, args=("ml",))]
    threads[0].start()
    _wait_for(lambda: _health(running.base_url)["in_flight"] == 1, "ml decoding")
    threads.append(threading.Thread(target=ask, args=("ma",)))
    threads[1].start()
    _wait_for(lambda: _health(running.base_url)["waiting"] == 1, "ma waiting")
    running.stop()
    for thread in threads:
        thread.join(60)
    assert answers["ma"][0] == 503
    assert answers["ma"][1]["error"]["code"] == "shutting_down"
    assert answers["ml"][0] == 200
    assert answers["ml"][1]["choices"][0]["finish_reason"] == "length"
    assert loads == []
    assert not scheduler._thread.is_alive()


def test_a_ticket_whose_loop_closed_drops_the_event_quietly():
    loop = asyncio.new_event_loop()
    ticket = Ticket(loop)
    loop.close()
    ticket.deliver("late event")  # the decoder thread after the server stopped: no error
