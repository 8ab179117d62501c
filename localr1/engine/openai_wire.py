"""The OpenAI chat-completions wire format, both ways: a request body from our messages and
GenerationParams, and server-sent events (or one JSON reply) read back into deltas.

Servers name the reasoning differently: llama-server and DeepSeek's API send
`reasoning_content`, Ollama and vLLM >= 0.9 `reasoning`; both are read. Inline `<think>` tags
in `content` are left for `remote_reasoning` to split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.engine.events import REASONING_EFFORT_BUDGETS, GenerationParams
from localr1.errors import LocalR1Error

# A longer SSE line is refused rather than held in memory without end.
MAX_LINE_BYTES = 16 << 20


class EndpointError(LocalR1Error):
    """An OpenAI-compatible server that could not be reached, refused a request or answered
    something that is not a chat completion."""


class StreamBroken(EndpointError):
    """The reply stopped before its end (a dropped connection): asking again may work."""


@dataclass(frozen=True)
class WireDelta:
    """What one streamed chunk (or a whole non-streamed reply) adds."""

    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


def chat_request(model: str, history: Sequence[ChatMessage], params: GenerationParams, *,
                 system_prompt: str | None = None,
                 response_format: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of a streaming POST /chat/completions. Earlier reasoning is never sent back;
    `response_format` goes only with an answer grammar (it came from --json-schema)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": m.role, "content": m.content} for m in history]
    body: dict[str, Any] = {
        "model": model, "messages": messages, "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": params.temperature, "top_p": params.top_p,
    }
    # Only when on: strict hosted APIs refuse fields they do not know.
    if params.top_k != 0:
        body["top_k"] = params.top_k
    if params.min_p != 0:
        body["min_p"] = params.min_p
    if params.repeat_penalty != 1.0:
        body["repeat_penalty"] = params.repeat_penalty
    if params.max_tokens > 0:
        body["max_tokens"] = params.max_tokens
    if params.seed is not None:
        body["seed"] = params.seed
    effort = reasoning_effort(params.reasoning_budget)
    if effort is not None:
        body["reasoning_effort"] = effort
    if response_format is not None and params.answer_grammar is not None:
        body["response_format"] = response_format
    return body


def reasoning_effort(budget: int) -> str | None:
    """The `reasoning_effort` a budget stands for; None for unlimited (the server's default)
    and for budgets that name no effort level."""
    if budget < 0:
        return None
    return next((name for name, value in REASONING_EFFORT_BUDGETS.items() if value == budget),
                None)


def schema_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's response_format for answers that follow a JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                    "strict": True}}


# What sse_chunks yields for `data: [DONE]`: the stream ended as it should, not cut off.
STREAM_END: dict[str, Any] = {}


def sse_chunks(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of an event stream's `data:` fields, then STREAM_END if the stream
    ended with `data: [DONE]`."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line:
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            continue  # comments (":") and event/id/retry fields carry nothing for us
        if data:
            text, data = "\n".join(data), []
            if text.strip() == "[DONE]":
                yield STREAM_END
                return
            yield _json_object(text)
    if data:  # the last event without its blank line
        text = "\n".join(data)
        yield STREAM_END if text.strip() == "[DONE]" else _json_object(text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise EndpointError(f"the server sent something that is not JSON: {_short(text)}") \
            from None
    if not isinstance(value, dict):
        raise EndpointError(f"the server sent something that is not a chunk: {_short(text)}")
    return value


def reply_chunks(body: bytes) -> Iterator[dict[str, Any]]:
    """A server that ignored `stream` answers with one chat.completion object."""
    yield _json_object(body.decode("utf-8", "replace"))


def wire_delta(chunk: dict[str, Any]) -> WireDelta:
    """One chunk (`delta`) or whole reply (`message`) as a WireDelta; an error chunk raises."""
    if "error" in chunk:
        raise EndpointError(f"the server stopped with an error: {error_text(chunk)}")
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and \
        isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or choice.get("message") or {}
    if not isinstance(delta, dict):
        delta = {}
    reasoning = _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
    finish = choice.get("finish_reason")
    usage = chunk.get("usage")
    return WireDelta(reasoning=reasoning, content=_text(delta.get("content")),
                     finish_reason=finish if isinstance(finish, str) else None,
                     usage=usage if isinstance(usage, dict) else None)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def usage_count(usage: dict[str, Any] | None, *path: str) -> int | None:
    """A token count from a usage object (`usage_count(u, "completion_tokens_details",
    "reasoning_tokens")`); None when absent or not a count."""
    value: Any = usage
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def error_text(body: Any) -> str:
    """The message of an error reply: OpenAI's {"error": {"message"}}, {"error": "..."},
    FastAPI's {"detail"}, or the start of whatever else it was."""
    if isinstance(body, bytes):
        text = body.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return _short(text)
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, str):
            return _short(error)
        if error is not None:
            return _short(json.dumps(error))
    return _short(json.dumps(body))


def _short(text: str, limit: int = 200) -> str:
    """One line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
