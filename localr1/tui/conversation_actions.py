"""What the chat screen does to a whole conversation: rename, pin, delete, export to Markdown
and change its settings, each through its dialog.

All but the settings need a saved conversation (a new chat is saved by its first message).
The history changes go through the screen's `ConversationView`; a failure is a one-line
notification and the screen stays as it was.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from textual.content import Content

from localr1.errors import LocalR1Error
from localr1.terminal_text import visible_controls
from localr1.tui.formatting import one_line

if TYPE_CHECKING:
    from localr1.store import Conversation
    from localr1.tui.screens.chat import ChatScreen
    from localr1.tui.screens.settings import SettingsResult


class ConversationActions:
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def _failed(self, exc: Exception, prefix: str = "") -> None:
        self.screen.notify(f"{prefix}{exc}", severity="error", markup=False)

    def _saved_conversation(self) -> Conversation | None:
        if self.screen.conversation is None:
            self.screen.notify("Send a message first: this chat is not saved yet.")
        return self.screen.conversation

    def rename(self) -> None:
        screen = self.screen
        conversation = self._saved_conversation()
        if conversation is None:
            return

        def renamed(title: str | None) -> None:
            if title is None:
                return
            try:
                screen.conversations.rename(conversation.id, title)
            except LocalR1Error as exc:
                self._failed(exc)
                return
            screen.refresh_conversation()

        from localr1.tui.screens.dialogs import TextPromptScreen

        screen.app.push_screen(TextPromptScreen("Rename the conversation:",
                                                conversation.title or ""), renamed)

    def toggle_pin(self) -> None:
        screen = self.screen
        conversation = self._saved_conversation()
        if conversation is None:
            return
        try:
            screen.conversations.set_pinned(conversation.id, not conversation.pinned)
        except LocalR1Error as exc:
            self._failed(exc)
            return
        screen.notify("Unpinned." if conversation.pinned else "Pinned to the top.")
        screen.refresh_conversation()

    def delete(self) -> None:
        """After a confirmation; the screen then shows a new chat."""
        screen = self.screen
        conversation = self._saved_conversation()
        if conversation is None:
            return
        if screen.turn is not None:
            screen.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        question = Content.assemble("Delete the conversation\n",
                                    (one_line(visible_controls(conversation.title or
                                                               "Untitled")), "bold"),
                                    "\nand all its messages? This cannot be undone.")

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                screen.conversations.delete(conversation.id)
            except LocalR1Error as exc:
                self._failed(exc)
                return
            screen.app.forget_conversation_settings(conversation.id)
            await screen.open_conversation(None)
            screen.sidebar.reload(None)
            screen.notify("Deleted.")

        from localr1.tui.screens.dialogs import ConfirmScreen

        screen.app.push_screen(ConfirmScreen(question), answered)

    async def reload_if_changed_elsewhere(self) -> None:
        """Show the open conversation again when another program (`localr1 run --cid N`)
        changed it, unless the user is busy with it here (a turn, an edit, a dialog)."""
        screen = self.screen
        conversation = screen.conversation
        if conversation is None or screen.turn is not None or screen.editing is not None \
                or screen.app.screen is not screen:
            return
        try:
            stored = screen.conversations.changed_in_store()
        except LocalR1Error:
            await self.deleted_elsewhere(conversation.id)
            return
        if stored is not None:
            await screen.open_conversation(stored.id)
            screen.sidebar.reload(stored.id)

    async def deleted_elsewhere(self, conversation_id: int) -> None:
        """The open conversation cannot be read any more (`localr1 history rm` in another
        terminal): a new chat, and a note saying why."""
        screen = self.screen
        screen.app.forget_conversation_settings(conversation_id)
        await screen.open_conversation(None)
        screen.sidebar.reload(None)
        screen.notify("This conversation was deleted by another program.", severity="warning")

    def export(self) -> None:
        """To a Markdown file the user names (reasoning included), asking before
        overwriting one."""
        conversation = self._saved_conversation()
        if conversation is None:
            return
        from localr1.tui.screens.dialogs import ConfirmScreen, TextPromptScreen

        app = self.screen.app
        slug = re.sub(r"[^A-Za-z0-9]+", "-", conversation.title or "").strip("-").lower()[:40]
        default = Path.cwd() / f"{slug or 'conversation'}-{conversation.id}.md"

        def chosen(answer: str | None) -> None:
            if not answer or not answer.strip():
                return
            path = Path(answer.strip()).expanduser()
            if path.exists():
                app.push_screen(ConfirmScreen(Content(f"{path} exists. Overwrite it?"),
                                              yes="Overwrite"),
                                lambda yes: self._export_to(conversation.id, path)
                                if yes else None)
            else:
                self._export_to(conversation.id, path)

        app.push_screen(TextPromptScreen("Export to this Markdown file (reasoning "
                                         "included):", str(default)), chosen)

    def _export_to(self, conversation_id: int, path: Path) -> None:
        try:
            path.write_text(self.screen.conversations.markdown(conversation_id),
                            encoding="utf-8")
        except (LocalR1Error, OSError) as exc:
            self._failed(exc, "Export failed: ")
            return
        self.screen.notify(f"Exported to {path.resolve()}", markup=False, timeout=8)

    def settings(self) -> None:
        """The open (or new) conversation's settings and the reasoning preference; a new
        context size or GPU layers reloads the model unless a reply is streaming."""
        from localr1.tui.screens.settings import SettingsScreen

        app = self.screen.app
        assert self.screen.conv_settings is not None
        info = app.engine.info if app.engine is not None else None
        app.push_screen(SettingsScreen(self.screen.conv_settings, app.prefs.keep_reasoning_open,
                                       context_in_use=(info.n_ctx or None) if info else None,
                                       context_trained=info.n_ctx_train if info else None,
                                       config=app.settings),
                        self._apply_settings)

    def _apply_settings(self, result: SettingsResult | None) -> None:
        if result is None:
            return
        screen = self.screen
        app = screen.app
        if result.keep_reasoning_open != app.prefs.keep_reasoning_open:
            app.set_keep_reasoning_open(result.keep_reasoning_open)
        screen.conv_settings = result.settings
        if screen.conversation is None:
            app.new_chat_settings = result.settings  # saved with the chat's first message
            saved = True
        else:
            saved = app.save_conversation_settings(screen.conversation, result.settings)
            screen.refresh_conversation()  # its system prompt, for the next save's compare
        if app.model_path is not None and app.engine_config is not None and screen.turn is None:
            wanted = app.engine_config_for(result.settings, app.model_path)
            if wanted != app.engine_config:
                app.load_model(wanted)
        if saved:  # a failed save has told the user already
            screen.notify("Settings saved.")
