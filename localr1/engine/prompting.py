"""Stored chat history → the messages a model sees.

DeepSeek's guidance for R1 and its distills: no system prompt (fold any instructions into the
first user turn) and never send earlier reasoning back. When the history does not fit the
context window next to the room reserved for the reply, the oldest turns go first; the newest
user message is never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localr1.chat_message import ChatMessage
from localr1.errors import ContextOverflowError

ModelMessage = dict[str, str]

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.S)


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[ModelMessage]
    prompt_tokens: int
    dropped_messages: int  # how many of the oldest history messages were left out


def to_model_messages(history: Sequence[ChatMessage], system_prompt: str | None,
                      fold_system: bool) -> list[ModelMessage]:
    """Model-ready messages: reasoning removed, system prompt folded for R1 models."""
    system_parts = [system_prompt] if system_prompt else []
    system_parts += [m.content for m in history if m.role == "system" and m.content]
    messages: list[ModelMessage] = []
    for message in history:
        if message.role == "system":
            continue
        content = message.content
        if message.role == "assistant":
            # An answer stored with its think block inline must not leak reasoning either.
            content = _THINK_BLOCK.sub("", content).strip()
        messages.append({"role": message.role, "content": content})
    system_text = "\n\n".join(system_parts)
    if not system_text:
        return messages
    if fold_system:
        for message in messages:
            if message["role"] == "user":
                message["content"] = f"{system_text}\n\n{message['content']}"
                break
        return messages
    return [{"role": "system", "content": system_text}, *messages]


def fit_to_context(history: Sequence[ChatMessage], system_prompt: str | None, fold_system: bool,
                   count_tokens: Callable[[list[ModelMessage]], int], n_ctx: int,
                   reserve_tokens: int) -> FittedPrompt:
    """Drop the oldest turns until prompt + reserved reply tokens fit in `n_ctx`.

    A turn is a user message with the assistant replies after it, so the model never sees an
    answer without its question. The system prompt always stays (it is re-folded into the
    first user message that remains).
    """
    if not history or history[-1].role != "user":
        raise ValueError("the last message of a chat turn must be the user's")
    turn_starts = [i for i, m in enumerate(history) if m.role == "user"]
    budget = n_ctx - reserve_tokens
    for start in turn_starts:
        kept = [m for m in history[:start] if m.role == "system"] + list(history[start:])
        messages = to_model_messages(kept, system_prompt, fold_system)
        tokens = count_tokens(messages)
        if tokens <= budget:
            dropped = sum(1 for m in history[:start] if m.role != "system")
            return FittedPrompt(messages, tokens, dropped)
    raise ContextOverflowError(
        f"the prompt needs {tokens} tokens but the context window of {n_ctx} leaves "
        f"{budget} after reserving {reserve_tokens} for the reply; "
        "shorten the prompt, lower --max-tokens or raise --ctx"
    )


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Tokens to keep free for the reply: max_tokens, or a quarter of the context if unbounded."""
    return min(max_tokens, n_ctx - 1) if max_tokens > 0 else n_ctx // 4
