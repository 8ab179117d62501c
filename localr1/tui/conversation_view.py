"""The conversation the chat screen shows, and every store operation the screen does on it.

The chat screen asks this class for its store operations (the sidebar lists and searches,
and the app saves F4 settings, on their own); it keeps the open conversation
(`current`; None for a new chat not saved yet) and reads its active branch, its versions
(regenerations and edits are siblings in the store's message tree) and its title. Methods
raise LocalR1Error (one line, for a notification) unless they say otherwise.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Literal

from localr1.errors import LocalR1Error

if TYPE_CHECKING:
    from localr1.store import Conversation, Message, Store

Role = Literal["user", "assistant"]
VersionStep = Literal["switched", "at an end", "nothing to switch"]


class ConversationView:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.current: Conversation | None = None

    def open(self, conversation_id: int | None) -> list[Message]:
        """Make `conversation_id` (None: a new chat) the current conversation and return its
        active branch. On an error the current one stays."""
        if conversation_id is None:
            self.current = None
            return []
        conversation = self.store.conversation(conversation_id)
        messages = self.store.branch(conversation_id)
        self.current = conversation
        return messages

    def create(self, *, model: str, system_prompt: str | None,
               params: dict[str, Any]) -> Conversation:
        """Save the new chat (before its first message) and make it current."""
        self.current = self.store.create_conversation(model=model, system_prompt=system_prompt,
                                                      params=params)
        return self.current

    def refresh(self) -> Conversation | None:
        """Read the current conversation again (title, pin, counts); None when there is none
        or it cannot be read (the last one read stays)."""
        if self.current is None:
            return None
        try:
            self.current = self.store.conversation(self.current.id)
        except LocalR1Error:
            return None
        return self.current

    def last_user_message(self) -> tuple[list[Message], Message | None]:
        """The current conversation's active branch and its last user message."""
        assert self.current is not None
        branch = self.store.branch(self.current.id)
        return branch, _last(branch, "user")

    def message(self, message_id: int) -> Message | None:
        """A stored message; None when it cannot be read."""
        try:
            return self.store.message(message_id)
        except LocalR1Error:
            return None

    def version_of(self, message: Message) -> tuple[int, int] | None:
        """(index from 1, count) of `message` among its versions; None when unknown."""
        try:
            siblings = self.store.alternates(message.id)
        except LocalR1Error:
            return None
        ids = [m.id for m in siblings]
        return (ids.index(message.id) + 1, len(ids)) if message.id in ids else None

    def step_version(self, role: Role, step: int) -> VersionStep:
        """Show the previous (-1) or next (1) version of the branch's last `role` message:
        the active branch then runs through it. Raises ValueError for a message that is not
        among its own versions."""
        assert self.current is not None
        message = _last(self.store.branch(self.current.id), role)
        if message is None:
            return "nothing to switch"
        siblings = self.store.alternates(message.id)
        index = [m.id for m in siblings].index(message.id) + step
        if not 0 <= index < len(siblings):
            return "at an end"
        self.store.set_active_leaf(self.current.id, siblings[index].id)
        return "switched"

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename(conversation_id, title)

    def set_pinned(self, conversation_id: int, pinned: bool) -> None:
        self.store.set_pinned(conversation_id, pinned)

    def delete(self, conversation_id: int) -> None:
        self.store.delete_conversation(conversation_id)

    def markdown(self, conversation_id: int) -> str:
        """The whole conversation as Markdown, reasoning included (for an export)."""
        return self.store.conversation_markdown(conversation_id, include_reasoning=True)

    def after_failed_turn(self, conversation_id: int, text: str | None) -> tuple[int | None,
                                                                                 bool]:
        """What to show after a turn failed: the conversation (None once one made for this
        message and left empty is deleted) and whether the sent `text` is in the store
        (nothing typed is lost). Never raises."""
        try:
            conversation = self.store.conversation(conversation_id)
            branch = self.store.branch(conversation_id)
        except LocalR1Error:
            conversation, branch = None, []
        saved = text is None or any(m.role == "user" and m.content == text for m in branch[-2:])
        if conversation is not None and not conversation.message_count:
            with contextlib.suppress(LocalR1Error):  # made for this message, holds nothing
                self.store.delete_conversation(conversation.id)
            conversation = None
        return (conversation.id if conversation else None), saved


def context_used(messages: list[Message]) -> int | None:
    """The context the branch `messages` filled at its last answer (prompt and answer)."""
    for message in reversed(messages):
        if message.role == "assistant" and message.prompt_tokens is not None:
            return message.prompt_tokens + (message.completion_tokens or 0)
    return None


def _last(messages: list[Message], role: str) -> Message | None:
    return next((m for m in reversed(messages) if m.role == role), None)
