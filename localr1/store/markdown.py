"""A conversation's shown branch as Markdown (`history show --markdown`, exports, Ctrl+S)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from localr1.durations import format_seconds
from localr1.terminal_text import visible_controls

if TYPE_CHECKING:
    from localr1.store.database import Store


def conversation_markdown(store: Store, id: int, *, include_reasoning: bool = False) -> str:
    """The active branch as Markdown, control characters shown as visible escapes (a `cat`
    of the file must not run a model's escape sequences)."""
    conversation = store.conversation(id)
    parts = [f"# {visible_controls(conversation.title or 'Untitled conversation')}"]
    if conversation.system_prompt:
        parts.append(f"**System**\n\n{visible_controls(conversation.system_prompt)}")
    for message in store.branch(id):
        header = f"**{message.role.capitalize()}**"
        if message.finish_reason == "incomplete":
            header += " (interrupted)"
        elif message.finish_reason == "cancelled":
            header += " (stopped)"
        body = [header]
        if include_reasoning and message.reasoning:
            reasoning = visible_controls(message.reasoning.strip())
            body.append(f"<details><summary>{_thought_label(message.thinking_seconds)}"
                        f"</summary>\n\n{reasoning}\n\n</details>")
        if message.content:
            body.append(visible_controls(message.content.strip()))
        parts.append("\n\n".join(body))
    return "\n\n".join(parts) + "\n"


def _thought_label(seconds: float | None) -> str:
    if seconds is None:
        return "Reasoning"
    return f"Thought for {format_seconds(seconds)}"
