"""One message of a conversation as every layer passes it around: the store keeps it, the
engine's prompting turns a list of them into what the model sees."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatMessage:
    """One stored message. `reasoning` is kept for display and never sent back to the model."""

    role: str  # "system" | "user" | "assistant"
    content: str
    reasoning: str | None = None
