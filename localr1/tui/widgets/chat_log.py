"""The scrolling column of messages on the chat screen.

It shows a conversation's messages (the last `SHOWN_MESSAGES`), finds the message widgets in
it, cuts it short for a regenerate or an edit, and copies from the last answer (never opening
the links model output chooses). The message widgets are imported on first use: they pull in
the Markdown renderer (markdown-it, Pygments), which a fresh chat does not need for its first
paint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from localr1.terminal_text import visible_controls
from localr1.tui.formatting import literal
from localr1.tui.markdown_split import code_blocks

if TYPE_CHECKING:
    from textual.widgets import Markdown

    from localr1.store import Message
    from localr1.tui.widgets.message_view import AssistantMessage, UserMessage, Versions

SHOWN_MESSAGES = 60  # older messages of a long conversation stay in the store (and exports)


def message_views():
    """The message widgets' module (see the module docstring)."""
    from localr1.tui.widgets import message_view

    return message_view


class ChatLog(VerticalScroll):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._code_cursor: int | None = None  # the code block copied last

    async def show_messages(self, messages: list[Message], *,
                            versions: Callable[[Message], Versions | None],
                            answer: Callable[[Message, Versions | None], AssistantMessage],
                            ) -> None:
        """Show a conversation's branch (its last `SHOWN_MESSAGES` messages; an empty state
        when there are none) and follow its end. The last prompt and answer show which
        version they are; `answer` builds an answer's widget."""
        visible = [m for m in messages if m.role != "system"]
        shown: list[Widget] = []
        hidden = len(visible) - SHOWN_MESSAGES
        if hidden > 0:
            visible = visible[-SHOWN_MESSAGES:]
            shown.append(Static(f"{hidden} earlier messages are not shown here; ctrl+s "
                                "exports the whole conversation.", classes="earlier"))
        last_user = next((m for m in reversed(visible) if m.role == "user"), None)
        last_answer = next((m for m in reversed(visible) if m.role == "assistant"), None)
        for message in visible:
            numbered = versions(message) if message in (last_user, last_answer) else None
            if message.role == "user":
                shown.append(message_views().UserMessage(message.content, message.id,
                                                         numbered))
            else:
                shown.append(answer(message, numbered))
        if not visible:
            shown.append(_empty_state())
        self._code_cursor = None
        # No batch_update around awaits: Textual drops every paint while a batch is open.
        await self.remove_children()
        await self.mount_all(shown)
        self.scroll_end(animate=False, immediate=True)
        self.anchor()

    async def append(self, *widgets: Widget) -> None:
        """Add the widgets of a new turn at the end (the empty state goes) and follow them."""
        self._code_cursor = None
        await self.query(".empty").remove()
        await self.mount_all(widgets)
        self.anchor()

    def user_message(self, message_id: int) -> UserMessage | None:
        for widget in self.query_children(message_views().UserMessage):
            if widget.message_id == message_id:
                return widget
        return None

    def answers(self) -> list[AssistantMessage]:
        return list(self.query_children(message_views().AssistantMessage))

    def last_answer(self) -> AssistantMessage | None:
        answers = self.answers()
        return answers[-1] if answers else None

    async def remove_from(self, message_id: int) -> None:
        """Remove the user message `message_id` and everything after it."""
        widget = self.user_message(message_id)
        if widget is None:
            return
        await self.remove_after(widget)
        await widget.remove()

    async def remove_after(self, widget: Widget) -> None:
        children = list(self.children)
        await self.remove_children(children[children.index(widget) + 1:])

    def toggle_last_reasoning(self) -> bool:
        """Open or fold the reasoning of the last answer that has one; False when none
        has."""
        for answer in reversed(self.answers()):
            if answer.reasoning is not None:
                answer.reasoning.collapsed = not answer.reasoning.collapsed
                if not answer.reasoning.collapsed:
                    self.release_anchor()
                    answer.reasoning.scroll_visible(animate=False, top=True)
                return True
        return False

    def copy_answer(self) -> None:
        answer = self.last_answer()
        if answer is None or not answer.answer_text:
            self.notify("No answer to copy yet.")
            return
        text = visible_controls(answer.answer_text)
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the answer ({len(text):,} characters).")

    def copy_code(self, index: int | None = None) -> None:
        """Copy code block `index` of the last answer; without one, the last block, then
        the one before it at each call, wrapping around."""
        answer = self.last_answer()
        blocks = code_blocks(answer.answer_text) if answer is not None else []
        if not blocks:
            self.notify("The last answer has no code block.")
            return
        if index is None:
            index = len(blocks) - 1 if self._code_cursor is None else \
                (self._code_cursor - 1) % len(blocks)
        index = max(0, min(index, len(blocks) - 1))
        self._code_cursor = index
        self.app.copy_to_clipboard(visible_controls(blocks[index].code))
        self.notify(f"Copied code block {index + 1}/{len(blocks)} "
                    f"({visible_controls(blocks[index].summary)}).", markup=False)

    def code_block_count(self) -> int:
        answer = self.last_answer()
        return len(code_blocks(answer.answer_text)) if answer is not None else 0

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        # Model output chooses its links: never open them, offer to copy instead.
        event.stop()
        self.app.copy_to_clipboard(event.href)
        self.notify(Content.assemble("Link copied (not opened): ", literal(event.href)))


def _empty_state() -> Static:
    return Static(Content.assemble(
        ("Ask anything.", "bold"),
        "\n\nenter sends · shift+enter or ctrl+j adds a line · ctrl+p lists every action · "
        "f1 shows the keys"), classes="empty")
