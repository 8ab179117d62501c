"""The values the store hands out: conversations, messages, search hits, and valid ids."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from localr1.chat_message import ChatMessage
from localr1.store.errors import StoreError

ROLES = ("system", "user", "assistant")
# "repetition": the engine stopped a turn that kept repeating itself (schema m004).
FINISH_REASONS = ("stop", "length", "cancelled", "error", "incomplete", "repetition")
TITLE_LENGTH = 60
MAX_ID = 2**63 - 1  # SQLite's largest INTEGER


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str | None
    model: str | None
    system_prompt: str | None
    params: dict[str, Any]  # the sampling settings and whatever else was saved with it
    created_at: str  # ISO-8601 UTC
    updated_at: str
    pinned: bool
    archived: bool
    active_leaf_id: int | None  # None = the newest leaf
    message_count: int | None = None  # all messages, alternates included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    parent_id: int | None
    role: str  # "system" | "user" | "assistant"
    content: str
    reasoning: str | None
    thinking_seconds: float | None
    model: str | None
    finish_reason: str | None  # None for user/system; 'incomplete' = interrupted mid-answer
    prompt_tokens: int | None
    completion_tokens: int | None
    reasoning_tokens: int | None
    ttft_ms: float | None
    tokens_per_second: float | None
    created_at: str
    batch_id: str | None

    def to_chat_message(self) -> ChatMessage:
        return ChatMessage(self.role, self.content, self.reasoning)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int | None  # None for a title hit
    title: str | None
    snippet: str  # matches wrapped in the `highlight` pair given to search()
    rank: float  # bm25: lower (more negative) is better
    role: str | None = None  # the message's role; None for a title hit

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MESSAGE_COLUMNS = tuple(f.name for f in fields(Message))


def parse_conversation_id(text: str | int) -> int:
    """A conversation id typed by a user, or a one-line StoreError (ids are 1..2^63-1)."""
    value = text
    if isinstance(text, str):
        stripped = text.strip()
        if not stripped.isdecimal() or not stripped.isascii():
            raise StoreError(f"not a conversation id: {text!r} (ids are positive whole numbers)")
        if len(stripped) > 40:  # too big anyway, and int() refuses over 4,300 digits
            raise StoreError(f"no conversation {stripped[:24]}…")
        value = int(stripped)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise StoreError(f"no conversation {value}")
    return value


def title_from_text(text: str, limit: int = TITLE_LENGTH) -> str | None:
    """First non-blank line, whitespace collapsed, cut at a word to `limit` chars with '…'."""
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line:
            break
    else:
        return None
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def utc_now() -> str:
    """The store's timestamps: ISO-8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
