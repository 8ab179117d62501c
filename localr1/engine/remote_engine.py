"""A model behind an OpenAI-compatible server (`--endpoint URL`): llama-server, Ollama, vLLM,
another `localr1 serve`, or a hosted API. It gives the front ends what `Engine` gives them
(see `chat_engine.ChatEngine`), so records, history and the TUI look the same:

    engine = RemoteEngine.connect("http://127.0.0.1:8080/v1", model="r1")
    for event in engine.stream_chat([ChatMessage("user", "hi")], GenerationParams()):
        ...  # ReasoningDelta*, AnswerDelta*, then exactly one TurnDone

Each turn is one streamed POST /chat/completions on its own connection, so turns may run from
several threads at once (batch --parallel). The server keeps its own context window and
template: nothing is trimmed here, and a prompt too long for it comes back as its error.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.engine.endpoint_http import Endpoint, Reply, RetryPolicy, get_json, post
from localr1.engine.events import (
    Event,
    FinishReason,
    GenerationParams,
    ModelInfo,
    TurnDone,
    TurnStats,
)
from localr1.engine.openai_wire import (
    STREAM_END,
    EndpointError,
    StreamBroken,
    chat_request,
    reply_chunks,
    sse_chunks,
    usage_count,
    wire_delta,
)
from localr1.engine.reasoning import SplitDelta
from localr1.engine.remote_reasoning import RemoteReasoningSplitter
from localr1.engine.turn_account import delta_events

# Model names that say the model thinks first (R1 and its distills, QwQ, "thinking" models).
_REASONING_NAME = re.compile(r"r1|qwq|think|reason", re.IGNORECASE)


@dataclass(frozen=True)
class RemoteModelInfo(ModelInfo):
    """A model on a server: its name there, and where; the server knows the rest."""

    endpoint: str = ""

    @property
    def placement(self) -> str:
        return f"via {self.endpoint}"


def remote_model_info(endpoint: Endpoint, model: str) -> RemoteModelInfo:
    return RemoteModelInfo(
        path=Path(model), name=model, architecture=None, quantization=None,
        parameter_count=0, size_bytes=0,
        # n_ctx 0: unknown here. All layers "offloaded" (n_layers + 1): nothing runs on our CPU.
        n_layers=0, n_ctx=0, n_ctx_train=None, gpu_layers=1, backend="remote", threads=0,
        chat_format="the server's", is_r1=bool(_REASONING_NAME.search(model)),
        can_answer_now=False, endpoint=endpoint.address)


class RemoteEngine:
    """A model served over the OpenAI chat-completions API. Thread-safe: each turn has its own
    connection. `answer_now` is accepted but has no effect: a server cannot be told to end
    its think block mid-stream."""

    def __init__(self, endpoint: Endpoint, model: str, *,
                 response_format: dict[str, Any] | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.endpoint = endpoint
        self.model = model
        self.info = remote_model_info(endpoint, model)
        self.response_format = response_format  # sent with turns that have an answer grammar
        self.policy = policy or RetryPolicy()

    @classmethod
    def connect(cls, url: str, model: str | None = None, api_key: str | None = None, *,
                env_api_key: str | None = None,
                response_format: dict[str, Any] | None = None,
                policy: RetryPolicy | None = None) -> RemoteEngine:
        """The server at `url`, for `model` (default: the first one its /models lists).
        `env_api_key` (OPENAI_API_KEY) goes only to https or loopback servers."""
        endpoint = Endpoint.parse(url, api_key, env_api_key)
        policy = policy or RetryPolicy()
        return cls(endpoint, model or served_model(endpoint, policy),
                   response_format=response_format, policy=policy)

    def close(self) -> None:
        """Nothing stays open between turns."""

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams, *,
                    system_prompt: str | None = None, cancel: threading.Event | None = None,
                    answer_now: threading.Event | None = None) -> Iterator[Event]:
        """Stream one assistant turn; EndpointError (one line) when the server fails, after
        the retries for a busy or unreachable one."""
        cancel = cancel or threading.Event()
        turn = _RemoteTurn(time.perf_counter(),
                           RemoteReasoningSplitter(expect_reasoning=self.info.is_r1))
        body = chat_request(self.model, history, params, system_prompt=system_prompt,
                            response_format=self.response_format)
        reply = post(self.endpoint, "/chat/completions", body, cancel, self.policy)
        if reply is not None:
            try:
                yield from turn.read(reply, cancel)
            finally:
                reply.close()
        if cancel.is_set():
            turn.finish_reason = "cancelled"
        yield from delta_events(turn.splitter.finish(
            cut_short=turn.finish_reason in ("cancelled", "length")))
        yield TurnDone(turn.stats())


def served_model(endpoint: Endpoint, policy: RetryPolicy) -> str:
    """The first model the server lists (llama-server serves one; Ollama lists what it has)."""
    listing = get_json(endpoint, "/models", policy)
    data = listing.get("data") if isinstance(listing, dict) else None
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
            return entry["id"]
    raise EndpointError(f"{endpoint.url}/models lists no model; pass --model NAME")


@dataclass
class _RemoteTurn:
    """One turn's reading and bookkeeping: the splitter, the server's counts, our times."""

    started: float
    splitter: RemoteReasoningSplitter
    first_at: float | None = None
    last_at: float | None = None
    thinking_ended_at: float | None = None
    chunks: int = 0  # text-carrying chunks: the token counts when the server sends no usage
    reasoning_chunks: int = 0
    held_chunks: int = 0  # chunks the splitter holds back: reasoning or answer, not known yet
    finish_reason: FinishReason | None = None
    usage: dict[str, Any] | None = None

    def read(self, reply: Reply, cancel: threading.Event) -> Iterator[Event]:
        chunks = sse_chunks(reply.lines()) if reply.is_event_stream \
            else reply_chunks(reply.read_all())
        ended = not reply.is_event_stream  # a whole reply is complete by itself
        for chunk in chunks:
            if chunk is STREAM_END:
                ended = True
                continue
            delta = wire_delta(chunk)
            now = time.perf_counter()
            if delta.reasoning or delta.content:
                self.first_at = self.first_at or now
                self.last_at = now
                self.chunks += 1
                deltas = self._feed(delta.reasoning, delta.content, now)
                yield from delta_events(deltas)
            if delta.finish_reason is not None:
                ended = True
                self.finish_reason = "length" if delta.finish_reason == "length" else "stop"
            if delta.usage is not None:
                self.usage = delta.usage
        if not ended and not cancel.is_set():
            raise StreamBroken("the server closed the connection before the answer ended")

    def _feed(self, reasoning: str, content: str, now: float) -> list[SplitDelta]:
        splitter = self.splitter
        was_reasoning, was_undecided = splitter.in_reasoning, splitter.undecided
        deltas = splitter.feed(reasoning, content)
        if splitter.undecided:
            self.held_chunks += 1  # counted once the splitter knows what they were
            return deltas
        if was_undecided:
            self._settle_held()
            # The chunk that decided carried reasoning (a tag), maybe its end too.
            was_reasoning = splitter.saw_reasoning
        if reasoning or was_reasoning or splitter.in_reasoning:
            self.reasoning_chunks += 1
        if was_reasoning and not splitter.in_reasoning and self.thinking_ended_at is None:
            self.thinking_ended_at = now
        return deltas

    def _settle_held(self) -> None:
        """Held-back chunks were reasoning when the block started in the prompt."""
        if self.splitter.saw_reasoning:
            self.reasoning_chunks += self.held_chunks
        self.held_chunks = 0

    def stats(self) -> TurnStats:
        self._settle_held()  # finish() decided them
        end = time.perf_counter()
        first = self.first_at
        completion = usage_count(self.usage, "completion_tokens")
        completion = completion if completion is not None else self.chunks
        reasoning = usage_count(self.usage, "completion_tokens_details", "reasoning_tokens")
        reasoning = reasoning if reasoning is not None else self.reasoning_chunks
        generating = (self.last_at or end) - first if first else 0.0
        thinking = None
        if self.splitter.saw_reasoning and first is not None:
            thinking = (self.thinking_ended_at or self.last_at or end) - first
        return TurnStats(
            finish_reason=self.finish_reason or "stop",
            prompt_tokens=usage_count(self.usage, "prompt_tokens") or 0,
            cached_prompt_tokens=usage_count(self.usage, "prompt_tokens_details",
                                             "cached_tokens") or 0,
            completion_tokens=completion,
            reasoning_tokens=reasoning if self.splitter.saw_reasoning else 0,
            reasoning_truncated=self.splitter.reasoning_truncated,
            reasoning_budget_hit=False,
            dropped_messages=0,
            ttft_seconds=(first - self.started) if first else end - self.started,
            tokens_per_second=(completion - 1) / generating
            if completion > 1 and generating > 0 else 0.0,
            thinking_seconds=thinking,
            total_seconds=end - self.started,
        )
