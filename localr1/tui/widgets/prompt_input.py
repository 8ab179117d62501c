"""The multi-line prompt: Enter sends, Shift+Enter or Ctrl+J adds a line.

Terminals without the kitty keyboard protocol send Shift+Enter as plain Enter; Ctrl+J (a bare
line feed) works everywhere, so both are offered. ↑ in an empty prompt asks to edit the last
message, like chat apps do.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    DEFAULT_CSS = """
    PromptInput { height: auto; min-height: 3; max-height: 12; border: tall $border-blurred; }
    PromptInput:focus { border: tall $border; }
    """

    @dataclass
    class Submitted(Message):
        prompt: PromptInput
        text: str

    class EditLastRequested(Message):
        pass

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         compact=False, highlight_cursor_line=False, **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            if self.text.strip():
                self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLastRequested())
            return
        await super()._on_key(event)
