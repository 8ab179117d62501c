"""The banner over the prompt while the user edits their last message.

It keeps the message being edited and the draft the prompt held before, which comes back when
the edit is cancelled (or sent) so nothing typed is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

if TYPE_CHECKING:
    from localr1.store import Message
    from localr1.tui.widgets.prompt_input import PromptInput


class EditBanner(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.display = False
        self.editing: Message | None = None
        self._stashed_draft = ""

    def start(self, message: Message, prompt: PromptInput) -> None:
        """Put `message` in the prompt to edit (again: the first draft stays stashed)."""
        if self.editing is None:
            self._stashed_draft = prompt.text
        self.editing = message
        prompt.text = message.content
        prompt.move_cursor(prompt.document.end)
        self.update("Editing your last message: enter sends it as a new version "
                    "(the old one stays, alt+↑/↓), esc cancels.")
        self.display = True

    def end(self, prompt: PromptInput, *, keep_typed: bool) -> None:
        """Leave edit mode: the stashed draft goes back into the prompt, unless the prompt
        holds text and `keep_typed` (typed while a reply streams)."""
        was_editing = self.editing is not None
        self.editing = None
        self.display = False
        if was_editing:
            stashed, self._stashed_draft = self._stashed_draft, ""
            if prompt.text.strip() == "" or not keep_typed:
                prompt.text = stashed
