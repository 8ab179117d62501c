"""Requests share the decoder's slots: concurrent streams each get their own text, more
requests than slots wait (none is cancelled), a client that goes away frees its slot, and a
seed makes a sampled answer reproducible. SmolLM2 where a real model must differ by prompt."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # the openai client's HTTP library
import pytest

from tests.fixtures.scripted_models import build_scripted_model
from tests.serve.conftest import http

PROMPTS = ["What is the capital of France?", "Why is the sky blue? One sentence.",
           "What is 2 + 2?", "Name a color."]


def _stream_text(client, model: str, prompt: str, **kwargs) -> tuple[str, str]:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True, **kwargs)
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_concurrent_streams_each_get_their_own_answer(serve, smollm2_model):
    running = serve(smollm2_model, name="smollm2", parallel=4, n_ctx_per_sequence=512)
    client = running.client()
    options = {"temperature": 0, "max_tokens": 16}
    alone = [_stream_text(client, "smollm2", p, **options) for p in PROMPTS]
    assert len({text for text, _ in alone}) == 4  # four different answers to tell apart
    # Six streams on four slots: four decode together, two wait; none is cancelled.
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: _stream_text(client, "smollm2", p, **options),
                                 PROMPTS + PROMPTS[:2]))
    assert together == alone + alone[:2]


def test_a_seed_makes_a_sampled_answer_reproducible(serve, smollm2_model):
    client = serve(smollm2_model, name="smollm2", n_ctx_per_sequence=512).client()

    def ask(seed: int) -> str:
        reply = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Tell me a story."}],
            temperature=1.0, seed=seed, max_tokens=16)
        return reply.choices[0].message.content

    first = ask(7)
    assert first and ask(7) == first


@pytest.fixture(scope="module")
def long_loop_model(tmp_path_factory):
    """Reasons forever, in a context long enough to take many seconds to fill."""
    return build_scripted_model(tmp_path_factory.mktemp("loop8k") / "loop.gguf", "loop",
                                context_length=8192)


def _in_flight(running) -> int:
    return http("GET", f"{running.base_url}/health")[1]["in_flight"]


def _wait_in_flight(running, count: int) -> None:
    """Poll the server's state; the generous bound only turns a hang into a failure."""
    pause = threading.Event()
    for _ in range(6000):
        if _in_flight(running) == count:
            return
        pause.wait(0.01)
    raise AssertionError(f"in_flight never became {count}")


def test_a_client_that_disconnects_frees_its_slot(serve, long_loop_model):
    running = serve(long_loop_model, parallel=1, n_ctx_per_sequence=8192)
    client = running.client()
    messages = [{"role": "user", "content": "think"}]
    # Full length, this stream would reason for ~8,000 tokens.
    stream = client.chat.completions.create(model="loop", messages=messages, stream=True)
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    assert _in_flight(running) == 1
    stream.close()
    _wait_in_flight(running, 0)
    # The one slot is free: the next request runs at once.
    reply = client.chat.completions.create(model="loop", messages=messages, max_tokens=5)
    assert reply.usage.completion_tokens == 5
    # A plain (not streamed) request whose client gives up frees its slot too.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{running.base_url}/v1/chat/completions",
                   json={"model": "loop", "messages": messages}, timeout=0.5)
    _wait_in_flight(running, 0)
