"""An OpenAI chat-completions request body, checked, as the core's values.

Fields a request leaves out take the server's defaults (R1 sampling, or the user's config);
fields the API has that we cannot honour are refused by name (422) rather than ignored, except
a few that only tune what we do anyway (`n` 1, `logprobs` false, `parallel_tool_calls`).
Unknown fields are ignored, as OpenAI-compatible servers do: clients send their own extras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.config import checked_setting
from localr1.engine.answer_format import AnswerFormatError, grammar_for_response_format
from localr1.engine.events import REASONING_EFFORT_BUDGETS, GenerationParams
from localr1.serve.api_error import ApiError

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 1000


@dataclass(frozen=True)
class ChatRequest:
    model: str | None  # None: the model the server has loaded
    messages: tuple[ChatMessage, ...]  # system messages folded out into `system`
    system: str | None
    params: GenerationParams
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    stop: tuple[str, ...]
    user: str | None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    # ValueError: also an integer over Python's 4,300-digit limit.
    except (ValueError, RecursionError) as exc:
        detail = f": {exc.msg} (line {exc.lineno}, column {exc.colno})" \
            if isinstance(exc, json.JSONDecodeError) else ""
        raise ApiError(400, f"the request body is not valid JSON{detail}",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def parse_chat_request(data: dict[str, Any], defaults: GenerationParams) -> ChatRequest:
    """The request's fields checked (ApiError 422 naming the field) and turned into values."""
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 512):
        raise _invalid("model", "must be a string")
    system, messages = _messages(data.get("messages"))
    stream = _optional(data, "stream", bool, False)
    stream_options = data.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _invalid("stream_options", "must be an object")
    include_usage = stream_options.get("include_usage") is True
    _refuse_unsupported(data)
    user = data.get("user")
    if user is not None and not (isinstance(user, str) and _encodable(user)):
        raise _invalid("user", "must be a string of valid Unicode")
    return ChatRequest(model=model or None, messages=messages, system=system,
                       params=_params(data, defaults), stream=stream,
                       include_usage=include_usage, stop=_stop(data.get("stop")),
                       user=user or None)


def _messages(value: Any) -> tuple[str | None, tuple[ChatMessage, ...]]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages", "must be a non-empty list of messages")
    system_parts: list[str] = []
    chat: list[ChatMessage] = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(where, "must be an object with role and content")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise _invalid(f"{where}.role", "must be system, developer, user or assistant"
                           + (" (tool calls are not supported)" if role == "tool" else ""))
        content = _content(message.get("content"), f"{where}.content",
                           allow_null=role == "assistant")
        if role in ("system", "developer"):
            if content:
                system_parts.append(content)
            continue
        # An assistant turn's reasoning (reasoning_content, reasoning, or an inline think
        # block, which prompting strips) is never sent back to the model.
        chat.append(ChatMessage(role, content))
    if not chat or chat[-1].role != "user":
        raise _invalid("messages", "the last message must be the user's")
    return ("\n\n".join(system_parts) or None), tuple(chat)


def _content(value: Any, where: str, *, allow_null: bool) -> str:
    if value is None and allow_null:
        return ""
    if isinstance(value, list):  # content parts: text only
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or \
                    not isinstance(part.get("text"), str):
                raise _invalid(where, "only text content parts are supported")
            texts.append(part["text"])
        value = "".join(texts)
    if not isinstance(value, str):
        raise _invalid(where, "must be a string or a list of text parts")
    if not _encodable(value):  # JSON allows a lone surrogate ("\\ud800"); UTF-8 does not
        raise _invalid(where, "is not valid Unicode (a lone surrogate)")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _params(data: dict[str, Any], defaults: GenerationParams) -> GenerationParams:
    values: dict[str, Any] = {}
    for key in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
        if data.get(key) is not None:
            values[key] = _setting(key, data[key], key)
    if data.get("seed") is not None:
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _invalid("seed", "must be an integer")
        values["seed"] = seed & 0xFFFFFFFF  # llama.cpp seeds are 32-bit; OpenAI's are int64
    for key in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        if data.get(key) is not None:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _invalid(key, "must be a positive integer")
            values["max_tokens"] = value
            break
    budget = _reasoning_budget(data)
    if budget is not None:
        values["reasoning_budget"] = budget
    try:
        grammar = grammar_for_response_format(data.get("response_format"))
    except AnswerFormatError as exc:  # some of its messages name response_format already
        message = str(exc)
        if not message.startswith("response_format"):
            message = f"response_format: {message}"
        raise ApiError(422, message, code="invalid_value", param="response_format") from None
    values["answer_grammar"] = grammar
    return replace(defaults, **values)


def _setting(key: str, value: Any, param: str) -> Any:
    try:
        return checked_setting(key, value)
    except ValueError as exc:
        raise _invalid(param, str(exc)) from None


def _reasoning_budget(data: dict[str, Any]) -> int | None:
    """reasoning_effort (none/low/medium/high), else chat_template_kwargs' thinking switch
    (Qwen's enable_thinking, or thinking) off: no think block."""
    effort = data.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in REASONING_EFFORT_BUDGETS:
            raise _invalid("reasoning_effort",
                           f"must be one of {', '.join(REASONING_EFFORT_BUDGETS)}")
        return REASONING_EFFORT_BUDGETS[effort]
    kwargs = data.get("chat_template_kwargs")
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        raise _invalid("chat_template_kwargs", "must be an object")
    for key in ("enable_thinking", "thinking"):
        if kwargs.get(key) is False:
            return 0
    return None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise _invalid("stop", f"must be a string or a list of up to {MAX_STOP_STRINGS} "
                               "non-empty strings")
    return tuple(stops)


def _refuse_unsupported(data: dict[str, Any]) -> None:
    n = data.get("n")
    if n is not None and n != 1:
        raise _invalid("n", "must be 1: one choice per request is supported")
    if data.get("tools"):
        raise _invalid("tools", "are not supported (no tool calls)")
    if data.get("logprobs"):
        raise _invalid("logprobs", "are not supported")


def _optional(data: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _invalid(key, f"must be a {kind.__name__}")
    return value


def _invalid(param: str, problem: str) -> ApiError:
    return ApiError(422, f"{param} {problem}", code="invalid_value", param=param)
