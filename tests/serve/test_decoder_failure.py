"""A llama_decode failure while another request is being prepared: the failing requests hear
it, the one being prepared is refused (503) rather than lost in a feed nobody reads, and the
model is reloaded for the next request."""

from __future__ import annotations

import asyncio
import threading

import pytest

from localr1.chat_message import ChatMessage
from localr1.config import Settings
from localr1.engine.decode_loop import DecodeLoop
from localr1.engine.events import GenerationParams, TurnDone
from localr1.engine.parallel_decoder import SequenceRequest
from localr1.errors import GenerationError
from localr1.models.choice import ChosenModel
from localr1.paths import app_paths
from localr1.serve.api_error import ApiError
from localr1.serve.scheduler import DecoderFailed, Ticket
from localr1.serve.server import ServeOptions, Server
from tests.serve.conftest import free_port

HI = (ChatMessage("user", "hi"),)


def _request(engine, ticket: Ticket, wait: threading.Event | None = None) -> SequenceRequest:
    prompt = engine.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    if wait is not None:
        wait.wait()
    return SequenceRequest(key=ticket, prompt=prompt, params=GenerationParams(),
                           cancel=ticket.cancel)


def test_a_request_prepared_during_a_decode_failure_is_refused(r1_prefill_model, monkeypatch):
    tiny = ChosenModel(r1_prefill_model, "tiny", installed=False)
    server = Server(tiny, Settings(), app_paths(),
                    ServeOptions(port=free_port(), parallel=2, n_ctx_per_sequence=512))
    server.start_model()
    scheduler = server.scheduler
    loop = asyncio.new_event_loop()
    fail = threading.Event()
    decode_step = DecodeLoop.step

    def failing_step(self, slots, sink):
        if fail.is_set():
            fail.clear()
            raise GenerationError("llama.cpp failed while generating (llama_decode -3)")
        return decode_step(self, slots, sink)

    monkeypatch.setattr(DecodeLoop, "step", failing_step)
    try:
        prepared, release = threading.Event(), threading.Event()
        late = Ticket(loop)
        outcome: list[object] = []

        def submit_late() -> None:
            try:
                scheduler.submit(tiny,
                                 lambda engine: (prepared.set(), _request(engine, late,
                                                                          release))[1])
                outcome.append("put")
            except ApiError as exc:
                outcome.append(exc)

        late_thread = threading.Thread(target=submit_late)
        late_thread.start()
        prepared.wait()
        fail.set()
        failing = Ticket(loop)
        scheduler.submit(tiny, lambda engine: _request(engine, failing))
        _wait_for(lambda: not scheduler.ready)  # the decoder stopped: "late" still prepares
        release.set()
        late_thread.join(60)
        [error] = outcome
        assert isinstance(error, ApiError) and error.status == 503
        event = loop.run_until_complete(asyncio.wait_for(failing.events.get(), 60))
        assert isinstance(event, DecoderFailed) and "llama_decode" in event.message
        again = Ticket(loop)  # the same model, reloaded
        scheduler.submit(tiny, lambda engine: _request(engine, again))
        events = []
        while not events or not isinstance(events[-1], TurnDone):
            events.append(loop.run_until_complete(asyncio.wait_for(again.events.get(), 60)))
        assert events[-1].stats.finish_reason == "stop"
    finally:
        scheduler.stop()
        loop.close()


def _wait_for(predicate) -> None:
    pause = threading.Event()
    for _ in range(6000):
        if predicate():
            return
        pause.wait(0.01)
    pytest.fail("the decoder never stopped")


def test_a_model_process_gone_while_a_request_is_prepared_is_a_503(serve, r1_prefill_model,
                                                                   monkeypatch):
    """With RPC workers the model is in a child process (engine/model_process): when it has
    just ended, preparing a request raises GenerationError. That is the server's fault, to be
    retried, not the client's (400)."""
    import httpx2 as httpx

    from localr1.engine.llama_engine import Engine

    running = serve(r1_prefill_model)

    def gone(*_args, **_kwargs):
        raise GenerationError("RPC worker 127.0.0.1:50052 stopped answering (connection "
                              "refused)")

    monkeypatch.setattr(Engine, "prepare_prompt", gone)
    reply = httpx.post(f"{running.base_url}/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "generation_failed"
    assert reply.json()["error"]["message"] == (
        "generation failed: RPC worker 127.0.0.1:50052 stopped answering (connection refused)")
