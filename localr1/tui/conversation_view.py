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
from localr1.store.records import title_from_text

if TYPE_CHECKING:
    from localr1.store import Conversation, Message, Store

Role = Literal["user", "assistant"]
VersionStep = Literal["switched", "at an end", "nothing to switch"]


class ConversationView:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.current: Conversation | None = None
        # The shown branch's last message as (id, finish reason, text lengths): another
        # program's answer grows in place, changing none of the conversation's own fields.
        self._last_seen: tuple[int, str | None, int, int] | None = None

    def open(self, conversation_id: int | None) -> list[Message]:
        """Make `conversation_id` (None: a new chat) the current conversation and return its
        active branch. On an error the current one stays."""
        if conversation_id is None:
            self.current = None
            return []
        conversation = self.store.conversation(conversation_id)
        messages = self.store.branch(conversation_id)
        self.current = conversation
        self._last_seen = _signature(messages[-1]) if messages else None
        return messages

    def create(self, *, model: str, system_prompt: str | None, params: dict[str, Any],
               first_message: str | None = None) -> Conversation:
        """Save the new chat (before its first message) and make it current. It gets the
        title its `first_message` would give it, so the sidebar can list it at once."""
        self.current = self.store.create_conversation(
            model=model, system_prompt=system_prompt, params=params,
            title=title_from_text(first_message) if first_message else None)
        return self.current

    def refresh(self) -> Conversation | None:
        """Read the current conversation again (title, pin, counts); None when there is none
        or it cannot be read (the last one read stays)."""
        if self.current is None:
            return None
        try:
            self.current = self.store.conversation(self.current.id)
            self._last_seen = self._last_signature(self.current)
        except LocalR1Error:
            return None
        return self.current

    def changed_in_store(self) -> Conversation | None:
        """The current conversation as stored, when its messages, active branch, title or
        last message (an answer another program is still writing grows in place) differ from
        what was read last; None otherwise. Raises LocalR1Error when it cannot be read (it
        was deleted elsewhere)."""
        if self.current is None:
            return None
        stored = self.store.conversation(self.current.id)
        seen = self.current
        if (stored.updated_at, stored.message_count, stored.active_leaf_id, stored.title) == \
                (seen.updated_at, seen.message_count, seen.active_leaf_id, seen.title) \
                and self._last_signature(stored) == self._last_seen:
            return None
        return stored

    def _last_signature(self, conversation: Conversation) -> tuple[int, str | None, int,
                                                                   int] | None:
        if conversation.active_leaf_id is not None:
            return _signature(self.store.message(conversation.active_leaf_id))
        branch = self.store.branch(conversation.id)
        return _signature(branch[-1]) if branch else None

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


def _signature(message: Message) -> tuple[int, str | None, int, int]:
    return (message.id, message.finish_reason, len(message.content),
            len(message.reasoning or ""))


def _last(messages: list[Message], role: str) -> Message | None:
    return next((m for m in reversed(messages) if m.role == role), None)
