"""One chat turn, saved as it happens: the core that `run`, the TUI and batch share.

The user message is committed before generation starts; the answer is written through the
store's AssistantMessageWriter (row at the first token, flushed at least once a second, real
finish reason at the end; flushed once more if a lost RPC worker ends the process). History
sent to the model is the conversation's active branch, with reasoning left out by `prompting`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from localr1.chat_message import ChatMessage
from localr1.engine import ggml_abort
from localr1.engine.chat_engine import ChatEngine
from localr1.engine.events import (
    AnswerDelta,
    Event,
    GenerationParams,
    ReasoningDelta,
    TurnDone,
    TurnStats,
)
from localr1.store import Conversation, Store

if TYPE_CHECKING:
    from localr1.store.writer import AssistantMessageWriter


@dataclass(frozen=True)
class TurnSaved:
    """The last event of a logged turn: where it was stored."""

    conversation_id: int
    user_message_id: int
    assistant_message_id: int


class ChatSession:
    """A loaded engine and the store it logs to, under one model label."""

    def __init__(self, store: Store, engine: ChatEngine, model_label: str) -> None:
        self.store = store
        self.engine = engine
        self.model_label = model_label

    def new_conversation(self, *, system_prompt: str | None = None,
                         params: GenerationParams | None = None) -> Conversation:
        return self.store.create_conversation(
            model=self.model_label, system_prompt=system_prompt,
            params=params.recorded() if params else None)

    def send(self, conversation_id: int, text: str, params: GenerationParams, *,
             parent_id: int | None | EllipsisType = ...,
             cancel: threading.Event | None = None,
             answer_now: threading.Event | None = None) -> Iterator[Event | TurnSaved]:
        """Add the user's message (after `parent_id`: default the active leaf; an edit passes
        the edited message's parent) and stream the answer. `answer_now`, set while the model
        thinks, ends its thinking and lets it answer (see Engine.stream_chat)."""
        user = self.store.add_message(conversation_id, "user", text, parent_id=parent_id)
        yield from self._answer(conversation_id, user.id, params, cancel, answer_now)

    def regenerate(self, conversation_id: int, user_message_id: int, params: GenerationParams,
                   *, cancel: threading.Event | None = None,
                   answer_now: threading.Event | None = None) -> Iterator[Event | TurnSaved]:
        """A new answer to an existing user message; the old answer stays as an alternate."""
        yield from self._answer(conversation_id, user_message_id, params, cancel, answer_now)

    def _answer(self, conversation_id: int, user_message_id: int, params: GenerationParams,
                cancel: threading.Event | None,
                answer_now: threading.Event | None) -> Iterator[Event | TurnSaved]:
        conversation = self.store.conversation(conversation_id)
        if conversation.model != self.model_label:  # switched models: it goes on with this one
            self.store.set_model(conversation_id, self.model_label)
        history = [m.to_chat_message() for m in self.store.branch(conversation_id,
                                                                 user_message_id)]
        writer = self.store.assistant_writer(conversation_id, parent_id=user_message_id,
                                             model=self.model_label)
        # Leaving early records 'cancelled' (Ctrl+C) or 'error'; a lost RPC worker ends the
        # process from another thread, after the text streamed so far is written.
        with writer, ggml_abort.on_exit(writer.flush_before_exit):
            for event in self.engine.stream_chat(history, params, cancel=cancel,
                                                 answer_now=answer_now,
                                                 system_prompt=conversation.system_prompt):
                _write(writer, event)
                yield event
        yield TurnSaved(conversation_id, user_message_id, writer.message_id)

    def save_answered(self, messages: Sequence[ChatMessage], events: Iterable[Event], *,
                      system_prompt: str | None = None, metadata: dict[str, Any] | None = None,
                      batch_id: str | None = None) -> TurnSaved:
        """Save a turn answered outside `send` (batch's parallel decoder) as a new
        conversation: the messages as sent, then the answer from its events, written the way
        `send` writes it. `metadata` goes in the conversation's params."""
        conversation = self.store.create_conversation(
            model=self.model_label, system_prompt=system_prompt, params=metadata)
        parent_id = None
        for message in messages:
            parent_id = self.store.add_message(conversation.id, message.role, message.content,
                                               batch_id=batch_id).id
        writer = self.store.assistant_writer(conversation.id, parent_id=parent_id,
                                             model=self.model_label, batch_id=batch_id)
        with writer:
            for event in events:
                _write(writer, event)
        return TurnSaved(conversation.id, parent_id, writer.message_id)


def _write(writer: AssistantMessageWriter, event: Event) -> None:
    """One engine event into the answer's row: texts as they come, the numbers at the end."""
    if isinstance(event, ReasoningDelta):
        writer.add("reasoning", event.text)
    elif isinstance(event, AnswerDelta):
        writer.add("answer", event.text)
    elif isinstance(event, TurnDone):
        stats = event.stats
        writer.finish(
            stats.finish_reason, prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens, reasoning_tokens=stats.reasoning_tokens,
            ttft_ms=round(stats.ttft_seconds * 1000, 1),
            tokens_per_second=round(stats.tokens_per_second, 2),
            thinking_seconds=stats.thinking_seconds)


# ---- speculative decoding, as every front end reports it -----------------------------------


def speculative_summary(stats: TurnStats, draft: str | None) -> dict[str, Any] | None:
    """`run --json`'s and batch records' "speculative" object: the draft (a model's name or
    "lookup"), tokens it drafted and the model accepted, and their ratio (null when nothing
    was drafted); None when the turn ran without a draft."""
    if draft is None:
        return None
    rate = stats.acceptance_rate
    return {"draft": draft, "drafted": stats.draft_tokens, "accepted": stats.draft_accepted,
            "acceptance_rate": None if rate is None else round(rate, 4)}


def acceptance_line(stats: TurnStats) -> str:
    """"312/400 tokens accepted (78%)", or that nothing was drafted."""
    rate = stats.acceptance_rate
    if rate is None:
        return "nothing drafted"
    return f"{stats.draft_accepted}/{stats.draft_tokens} tokens accepted ({rate:.0%})"
