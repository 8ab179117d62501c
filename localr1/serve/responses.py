"""What the server sends back: chat.completion objects and chat.completion.chunk SSE events,
with the reasoning where the client looks for it.

`--reasoning-format`: `both` (default) puts the trace in `reasoning_content` (llama-server and
the DeepSeek API) and in `reasoning` (Ollama, vLLM); `deepseek` and `reasoning` only one of
them; `inline` keeps `<think>...</think>` in `content` for clients that parse tags.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from localr1.engine.events import FinishReason, TurnStats
from localr1.engine.turn_notes import turn_notes

ReasoningFormat = Literal["both", "deepseek", "reasoning", "inline"]
REASONING_FORMATS: tuple[str, ...] = ("both", "deepseek", "reasoning", "inline")


def finish_reason(reason: FinishReason, stopped_by_string: bool) -> str:
    """OpenAI's finish_reason: a stop string or the end of the answer is "stop"; everything
    that cut the answer short (the token limit, a repetition loop) is "length"."""
    if stopped_by_string or reason == "stop":
        return "stop"
    return "length"


def response_notes(stats: TurnStats) -> list[str]:
    """The turn's notes (`run` prints the same), in API terms: a "length" stop is in
    finish_reason already, and the advice that comes with it names command-line flags."""
    notes = turn_notes(replace(stats, finish_reason="stop")
                       if stats.finish_reason == "length" else stats)
    if stats.dropped_messages:
        notes.insert(0, f"left out the {stats.dropped_messages} oldest messages to fit the "
                        "server's context")
    return notes


def usage(stats: TurnStats) -> dict[str, Any]:
    """OpenAI's usage object. Speculative decoding fills OpenAI's own fields for predicted
    outputs: drafted tokens the model kept, and those it rejected (only when it drafted)."""
    details: dict[str, Any] = {"reasoning_tokens": stats.reasoning_tokens}
    if stats.draft_tokens:
        details.update(accepted_prediction_tokens=stats.draft_accepted,
                       rejected_prediction_tokens=stats.draft_tokens - stats.draft_accepted)
    return {"prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
            "completion_tokens_details": details}


def timings(stats: TurnStats) -> dict[str, Any]:
    """Like llama-server's extra `timings` object (milliseconds, tokens per second, and its
    draft_n/draft_n_accepted when it drafted), with localr1's own fields: time to first token
    and the seconds spent thinking."""
    data: dict[str, Any] = {
        "ttft_ms": round(stats.ttft_seconds * 1000, 1),
        "predicted_per_second": round(stats.tokens_per_second, 2),
        "thinking_seconds": round(stats.thinking_seconds, 3)
        if stats.thinking_seconds is not None else None}
    if stats.draft_tokens:
        data.update(draft_n=stats.draft_tokens, draft_n_accepted=stats.draft_accepted)
    return data


@dataclass
class Completion:
    """One response being built: ids and the reasoning format, shared by both shapes."""

    model: str
    reasoning_format: ReasoningFormat
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    _inline_state: str = "before"  # inline streams: "before", "reasoning", "answer"

    def message(self, reasoning: str, answer: str) -> dict[str, Any]:
        if self.reasoning_format == "inline":
            content = f"<think>\n{reasoning}\n</think>\n\n{answer}" if reasoning else answer
            return {"role": "assistant", "content": content}
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        message.update(self._reasoning_fields(reasoning or None))
        return message

    def response(self, reasoning: str, answer: str, reason: str,
                 stats: TurnStats) -> dict[str, Any]:
        body = {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": self.message(reasoning, answer),
                             "logprobs": None, "finish_reason": reason}],
                "usage": usage(stats), "timings": timings(stats)}
        return _with_notes(body, stats)

    # ---- streaming ---------------------------------------------------------------------

    def first_chunk(self) -> str:
        return self._chunk({"role": "assistant", "content": ""})

    def reasoning_chunk(self, text: str) -> str:
        if self.reasoning_format == "inline":
            opening = "<think>\n" if self._inline_state == "before" else ""
            self._inline_state = "reasoning"
            return self._chunk({"content": opening + text})
        return self._chunk(self._reasoning_fields(text))

    def answer_chunk(self, text: str) -> str:
        closing = ""
        if self.reasoning_format == "inline" and self._inline_state == "reasoning":
            closing = "\n</think>\n\n"
        self._inline_state = "answer"
        return self._chunk({"content": closing + text})

    def last_chunk(self, reason: str, stats: TurnStats | None = None) -> str:
        """The finish chunk; with `notes` (an extension field) when the turn has any."""
        data = self._chunk_data({}, reason)
        return sse(_with_notes(data, stats) if stats is not None else data)

    def usage_chunk(self, stats: TurnStats) -> str:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [], "usage": usage(stats),
                    "timings": timings(stats)})

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> str:
        return sse(self._chunk_data(delta, reason))

    def _chunk_data(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": reason}]}

    def _reasoning_fields(self, text: str | None) -> dict[str, Any]:
        names = {"both": ("reasoning_content", "reasoning"), "deepseek": ("reasoning_content",),
                 "reasoning": ("reasoning",)}[self.reasoning_format]
        return {name: text for name in names}


def _with_notes(body: dict[str, Any], stats: TurnStats) -> dict[str, Any]:
    notes = response_notes(stats)
    return {**body, "notes": notes} if notes else body


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
