"""Stored chat history → the messages a model sees, fitted to its context window.

DeepSeek's guidance for R1 and its distills: no system prompt (fold any instructions into the
first user turn) and never send earlier reasoning back. When the history does not fit the
context window next to the room reserved for the reply, the oldest turns go first; the newest
user message is never dropped.

Fitting costs the same however long the history is: messages are counted one by one from the
newest backwards until the budget is full, and only the chosen prompt is rendered and
tokenized as a whole (to check the per-message estimate).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from localr1.chat_message import ChatMessage
from localr1.errors import ContextOverflowError

ModelMessage = dict[str, str]
# Messages -> (prompt text, prompt tokens): the exact, whole-prompt measure.
Encode = Callable[[list[ModelMessage]], tuple[str, list[int]]]
# One message -> its estimated share of a prompt's tokens (content plus template markup).
CountMessage = Callable[[ModelMessage], int]

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.S)
# Extra whole-prompt renders allowed to win back turns the per-message estimate left out.
_MAX_REGROW_RENDERS = 4


@dataclass(frozen=True)
class PreparedPrompt:
    """A chat turn's prompt, ready for llama.cpp."""

    messages: list[ModelMessage]  # what the model sees, after fitting
    text: str
    tokens: list[int]
    dropped_messages: int  # how many of the oldest history messages were left out

    @property
    def start_in_reasoning(self) -> bool:
        """The template opened the think block itself (the think-prefill R1 variant)."""
        return self.text.rstrip().endswith("<think>")


def to_model_messages(history: Sequence[ChatMessage], system_prompt: str | None,
                      fold_system: bool) -> list[ModelMessage]:
    """Model-ready messages: reasoning removed, system prompt folded for R1 models."""
    system_parts = [system_prompt] if system_prompt else []
    system_parts += [m.content for m in history if m.role == "system" and m.content]
    messages = [to_model_message(m) for m in history if m.role != "system"]
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


def to_model_message(message: ChatMessage) -> ModelMessage:
    content = message.content
    if message.role == "assistant":
        # An answer stored with its think block inline must not leak reasoning either.
        content = _THINK_BLOCK.sub("", content).strip()
    return {"role": message.role, "content": content}


def fit_to_context(history: Sequence[ChatMessage], system_prompt: str | None, fold_system: bool,
                   encode: Encode, count_message: CountMessage, n_ctx: int,
                   reserve_tokens: int) -> PreparedPrompt:
    """Drop the oldest turns until prompt + reserved reply tokens fit in `n_ctx`.

    A turn is a user message with the assistant replies after it, so the model never sees an
    answer without its question. System messages and the system prompt always stay (re-folded
    into the first user message that remains) and never count as dropped.
    """
    if not history or history[-1].role != "user":
        raise ValueError("the last message of a chat turn must be the user's")
    budget = n_ctx - reserve_tokens
    system = [m for m in history if m.role == "system"]

    def prepare(start: int) -> PreparedPrompt:
        kept = [m for m in history[start:] if m.role != "system"]
        messages = to_model_messages(system + kept, system_prompt, fold_system)
        text, tokens = encode(messages)
        dropped = sum(1 for m in history[:start] if m.role != "system")
        return PreparedPrompt(messages, text, tokens, dropped)

    best = prepare(len(history) - 1)  # the newest message alone (and the system text)
    if len(best.tokens) > budget:
        raise ContextOverflowError(
            f"the prompt needs {len(best.tokens)} tokens but the context window of {n_ctx} "
            f"leaves {budget} after reserving {reserve_tokens} for the reply; "
            "shorten the prompt, lower --max-tokens or raise --ctx",
            prompt_tokens=len(best.tokens), n_ctx=n_ctx, reserved_tokens=reserve_tokens)
    starts = _turn_starts_with_estimates(history, len(best.tokens), count_message)
    fitting: list[int] = []  # turn starts whose estimate fits, newest first
    for start, estimate in starts:
        if estimate > budget:
            break
        fitting.append(start)
    else:
        start = None  # nothing older left to win back
    # The estimate can miss by a few tokens either way: check by rendering the prompt once,
    # drop a turn more while it overshoots...
    estimate_held = True
    while fitting:
        candidate = prepare(fitting.pop())
        if len(candidate.tokens) <= budget:
            best = candidate
            break
        estimate_held = False
    # ...or, when it held, try a few older turns the estimate left out.
    for _ in range(_MAX_REGROW_RENDERS if estimate_held else 0):
        if start is None:
            break
        candidate = prepare(start)
        if len(candidate.tokens) > budget:
            break
        best = candidate
        start = next(starts, (None, 0))[0]
    return best


def _turn_starts_with_estimates(history: Sequence[ChatMessage], newest_tokens: int,
                                count_message: CountMessage) -> Iterator[tuple[int, int]]:
    """(index, estimated prompt tokens when the history is kept from there) for each place a
    kept history may start, newest first; each message is counted only when reached."""
    first = next(i for i, m in enumerate(history) if m.role != "system")
    total = newest_tokens
    for i in range(len(history) - 2, first - 1, -1):
        message = history[i]
        if message.role == "system":
            continue  # its text is in every candidate prompt already
        total += count_message(to_model_message(message))
        if message.role == "user" or i == first:
            yield i, total


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Tokens to keep free for the reply: max_tokens, or a quarter of the context if unbounded."""
    return min(max_tokens, n_ctx - 1) if max_tokens > 0 else n_ctx // 4
