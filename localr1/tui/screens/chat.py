"""The chat screen: sidebar, messages, prompt, status line; it dispatches every chat action.

Turns run through `TurnRunner` (a worker streaming through `ChatSession`, a paced timer
showing it); what the screen reads and changes in the history goes through
`ConversationView`; the messages live in a `ChatLog`.
"""

from __future__ import annotations

from dataclasses import replace
from types import EllipsisType
from typing import TYPE_CHECKING

from textual import events, on
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input

from localr1.errors import LocalR1Error
from localr1.store import Conversation, Message
from localr1.tui.conversation_actions import ConversationActions
from localr1.tui.conversation_settings import ConversationSettings
from localr1.tui.conversation_view import ConversationView, Role, context_used
from localr1.tui.messages import ContextWasTrimmed, StoreCheckDue, TurnEnded, TurnFailed
from localr1.tui.turn_errors import turn_error
from localr1.tui.turn_runner import ActiveTurn, TurnRunner
from localr1.tui.widgets.chat_log import ChatLog, message_views
from localr1.tui.widgets.edit_banner import EditBanner
from localr1.tui.widgets.model_header import ModelHeader
from localr1.tui.widgets.prompt_input import PromptInput
from localr1.tui.widgets.sidebar import ConversationSidebar
from localr1.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from localr1.tui.app import LocalR1App
    from localr1.tui.widgets.message_view import AssistantMessage, Versions

NARROW_WIDTH = 80  # below this many columns the sidebar hides
# Below these many columns the footer's keys would be cut off: it drops the spaces between
# them, then lists only the main keys (F1 lists them all).
FOOTER_FULL_WIDTH = 110
FOOTER_COMPACT_WIDTH = 100
NARROW_FOOTER_ACTIONS = frozenset({"new_chat", "stop", "answer_now", "settings", "models",
                                   "help"})
# Keys refused while a reply streams: the footer leaves them out then.
WAIT_FOR_THE_TURN_ACTIONS = frozenset({"regenerate", "edit_last"})
# How often the open conversation is compared with the store (one small query), so turns
# that `localr1 run --cid N` adds from another terminal show up.
STORE_CHECK_SECONDS = 2.0
STREAMING = "A reply is still streaming: esc stops it."


class ChatScreen(Screen[None]):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New"),
        Binding("escape", "stop", "Stop"),
        # Only while the model thinks. Not a ctrl key: the text boxes use those for editing.
        Binding("f5", "answer_now", "Answer now"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+g", "edit_last", "Edit"),
        Binding("ctrl+b", "copy_answer", "Copy"),
        Binding("ctrl+f", "focus_search", "Search"),
        Binding("f4", "settings", "Settings"),
        Binding("ctrl+t", "toggle_reasoning", "Reasoning", show=False),
        Binding("alt+left", "answer_version(-1)", "Previous answer", show=False),
        Binding("alt+right", "answer_version(1)", "Next answer", show=False),
        Binding("alt+up", "prompt_version(-1)", "Previous prompt version", show=False),
        Binding("alt+down", "prompt_version(1)", "Next prompt version", show=False),
        Binding("ctrl+o", "copy_code", "Copy code block", show=False),
        Binding("ctrl+backslash", "toggle_sidebar", "Sidebar", show=False),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "pin", "Pin", show=False),
        Binding("f8", "delete", "Delete", show=False),
        Binding("ctrl+s", "export", "Export", show=False),
    ]

    def __init__(self, conversation_id: int | None = None) -> None:
        super().__init__()
        self._initial_id = conversation_id
        self.conversations = ConversationView(self.app.store)
        self.turns = TurnRunner(self)
        self.actions = ConversationActions(self)
        self.edit_banner = EditBanner(id="edit-banner")
        self.conv_settings: ConversationSettings | None = None
        self._answer_now_shown = False
        self._footer_width: tuple[bool, bool] = (False, False)  # (compact, main keys only)

    @property
    def app(self) -> LocalR1App:  # type: ignore[override]
        return super().app  # type: ignore[return-value]

    @property
    def conversation(self) -> Conversation | None:
        """The open conversation; None for a new chat not saved yet."""
        return self.conversations.current

    @property
    def turn(self) -> ActiveTurn | None:
        """The reply streaming now, if one is."""
        return self.turns.active

    # ---- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ModelHeader(id="header")
        with Horizontal(id="main"):
            yield ConversationSidebar(self.app.store, id="sidebar")
            with Vertical(id="chat-pane"):
                yield ChatLog(id="chat-log")
                yield self.edit_banner
                yield PromptInput(id="prompt", placeholder="Message (enter sends, ctrl+j or "
                                  "shift+enter: new line, f1: keys)")
                yield StatusLine(id="status", show_timings=self.app.show_timings)
        yield Footer()

    @property
    def log_view(self) -> ChatLog:
        return self.query_one("#chat-log", ChatLog)

    @property
    def editing(self) -> Message | None:
        """The message being edited (the prompt sends a new version of it)."""
        return self.edit_banner.editing

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    @property
    def sidebar(self) -> ConversationSidebar:
        return self.query_one("#sidebar", ConversationSidebar)

    @property
    def header(self) -> ModelHeader:
        return self.query_one("#header", ModelHeader)

    @property
    def status(self) -> StatusLine:
        return self.query_one("#status", StatusLine)

    async def on_mount(self) -> None:
        if not self.app.show_timings:
            self.prompt.cursor_blink = False  # deterministic screenshots
        self.sidebar.reload(self._initial_id)
        await self.open_conversation(self._initial_id)
        self.model_changed()
        self.prompt.focus()
        self.set_interval(STORE_CHECK_SECONDS, self._check_store)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return True if self.turn is not None or self.editing is not None \
                or self.sidebar.searching else None
        if action == "answer_now":
            return self.thinking and self._can_answer_now
        return True

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """What the footer lists: only the main keys on a narrow terminal; while a reply
        streams, not the keys that must wait for its end (room for "answer now")."""
        bindings = super().active_bindings

        def listed(action: str) -> bool:
            if self._footer_width[1] and action not in NARROW_FOOTER_ACTIONS:
                return False
            return self.turn is None or action not in WAIT_FOR_THE_TURN_ACTIONS

        return {key: active if listed(active.binding.action) else
                active._replace(binding=replace(active.binding, show=False))
                for key, active in bindings.items()}

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width
        footer = (width < FOOTER_FULL_WIDTH, width < FOOTER_COMPACT_WIDTH)
        if footer != self._footer_width:
            self._footer_width = footer
            self.query_one(Footer).compact = footer[0]
            self.refresh_bindings()

    def _failed(self, exc: Exception, prefix: str = "") -> None:
        self.notify(f"{prefix}{exc}", severity="error", markup=False)

    # ---- the model -------------------------------------------------------------------------

    def model_changed(self) -> None:
        """The app loaded, failed to load or started loading a model."""
        app = self.app
        if app.model_state == "loading":
            self.header.show_model(None, loading=app.loading_label)
        elif app.engine is not None:
            self.header.show_model(app.engine.info, name=app.model_label,
                                   draft=app.draft_label)
        else:
            self.header.show_model(None, problem=app.model_problem)
        self.turns.model_changed()

    # ---- opening conversations --------------------------------------------------------------

    async def open_conversation(self, conversation_id: int | None) -> None:
        if self.turn is not None:
            self.notify(STREAMING, severity="warning")
            return
        try:
            messages = self.conversations.open(conversation_id)
        except LocalR1Error as exc:
            self._failed(exc)
            return
        conversation = self.conversation
        self.conv_settings = self.app.settings_for(conversation)
        self._end_edit()
        self.turns.context_used = context_used(messages)
        await self._show_messages(messages)
        self.header.show_title(conversation.title if conversation else None)
        self.sidebar.current_id = conversation_id
        self.sidebar._highlight_current()
        self.turns.show_idle_status()

    async def _show_messages(self, messages: list[Message]) -> None:
        await self.log_view.show_messages(messages, versions=self.versions,
                                          answer=self._answer_widget)

    def _answer_widget(self, message: Message | None, versions: Versions | None = None,
                       ) -> AssistantMessage:
        app = self.app
        label = message.model if message is not None else app.model_label
        expect_reasoning = message is None and app.engine is not None and app.engine.info.is_r1
        return message_views().AssistantMessage(
            model_label=label, message=message, versions=versions,
            keep_reasoning_open=app.prefs.keep_reasoning_open, show_timings=app.show_timings,
            expect_reasoning=expect_reasoning,
            error=turn_error(self.conversation, message.id if message is not None else None))

    def versions(self, message: Message) -> Versions | None:
        position = self.conversations.version_of(message)
        return message_views().Versions(*position) if position is not None else None

    def _last_user_message(self, nothing_text: str) -> tuple[list[Message], Message] | None:
        """(active branch, its last user message) to regenerate or edit; None after telling
        the user why not (a reply still streaming, or nothing sent yet)."""
        if self.turn is not None:
            self.notify(STREAMING, severity="warning")
            return None
        if self.conversation is None:
            self.notify(nothing_text)
            return None
        try:
            branch, last_user = self.conversations.last_user_message()
        except LocalR1Error as exc:
            self._failed(exc)
            return None
        if last_user is None:
            self.notify(nothing_text)
            return None
        return branch, last_user

    @on(ConversationSidebar.Selected)
    async def _conversation_selected(self, event: ConversationSidebar.Selected) -> None:
        await self.open_conversation(event.conversation_id)
        if self.has_class("-narrow"):
            self.sidebar.remove_class("-shown")
        self.prompt.focus()

    # ---- turns -----------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        await self.send()

    async def send(self) -> None:
        """Send what the prompt holds (as an edit, in edit mode)."""
        text = self.prompt.text
        if not text.strip():
            return
        if self.turn is not None:
            self.notify(STREAMING, severity="warning")
            return
        app, settings = self.app, self.conv_settings
        assert settings is not None
        if not self.turns.ready_for_turn(settings, self.send):
            return
        editing = self.editing
        conversation = self.conversation
        if conversation is None:
            try:
                conversation = self.conversations.create(
                    model=app.model_label, system_prompt=settings.system_prompt,
                    params=settings.params_json(app.settings), first_message=text)
            except LocalR1Error as exc:
                self._failed(exc)
                return  # the prompt keeps its text
            app.new_chat_settings = None
            # Listed (and titled) now, not when the answer ends.
            self.sidebar.reload(conversation.id)
            self.header.show_title(conversation.title)
        parent: int | None | EllipsisType = ... if editing is None else editing.parent_id
        if editing is not None:
            await self.log_view.remove_from(editing.id)
        user_widget = message_views().UserMessage(text)
        widget = self._answer_widget(None)
        await self.log_view.append(user_widget, widget)
        self.prompt.clear()
        self._end_edit()
        self.turns.start("send", conversation.id, settings, text=text, parent_id=parent,
                         user_message_id=None, user_widget=user_widget, widget=widget)

    async def action_regenerate(self) -> None:
        found = self._last_user_message("Nothing to regenerate yet.")
        settings, conversation = self.conv_settings, self.conversation
        if found is None:
            return
        assert settings is not None and conversation is not None
        if not self.turns.ready_for_turn(settings, self.action_regenerate):
            return
        branch, last_user = found
        user_widget = self.log_view.user_message(last_user.id)
        if user_widget is None:
            await self._show_messages(branch)
            user_widget = self.log_view.user_message(last_user.id)
        assert user_widget is not None
        await self.log_view.remove_after(user_widget)
        widget = self._answer_widget(None)
        await self.log_view.append(widget)
        self.turns.start("regenerate", conversation.id, settings, text=None, parent_id=...,
                         user_message_id=last_user.id, user_widget=user_widget, widget=widget)

    @on(TurnEnded)
    @on(TurnFailed)
    def _turn_over(self, message: TurnEnded | TurnFailed) -> None:
        self.turns.ended(message)

    def on_context_was_trimmed(self, message: ContextWasTrimmed) -> None:
        self.turns.trimmed(message)
        self.notify(f"The oldest {message.dropped_messages} messages were left out so the "
                    "conversation fits the context window.", severity="warning")

    async def turn_failed(self, turn: ActiveTurn, error: str) -> None:
        """Show what the store really holds; give the text back to the prompt unless it was
        saved (nothing typed is lost)."""
        self.notify(error, title="Generation failed", severity="error", markup=False,
                    timeout=12)
        shown_id, saved = self.conversations.after_failed_turn(turn.conversation_id, turn.text)
        await self.open_conversation(shown_id)
        if not saved and turn.text:
            current = self.prompt.text
            self.prompt.text = turn.text + ("\n\n" + current if current.strip() else "")
            self.prompt.move_cursor(self.prompt.document.end)
        self.sidebar.reload(self.conversation.id if self.conversation else None)

    def _check_store(self) -> None:
        """The timer: the footer's "answer now" follows the thinking; the store check is
        a message, so it runs in turn with the screen's other handlers (a send), never
        between their awaits."""
        if self.thinking != self._answer_now_shown:
            self._answer_now_shown = self.thinking
            self.refresh_bindings()
        if self.conversation is not None and self.turn is None:
            self.post_message(StoreCheckDue())

    @on(StoreCheckDue)
    async def _store_check_due(self) -> None:
        await self.actions.reload_if_changed_elsewhere()

    def refresh_conversation(self) -> None:
        """The open conversation changed in the store (a turn, a rename, a pin)."""
        conversation = self.conversations.refresh()
        if conversation is not None:
            self.header.show_title(conversation.title)
            self.sidebar.reload(conversation.id)

    # ---- stop, edit, versions ----------------------------------------------------------------

    def action_stop(self) -> None:
        """Esc: close the search results first, then stop the reply or cancel the edit."""
        if self.sidebar.searching:
            self.sidebar.clear_filter()
            self.prompt.focus()
        elif self.turn is not None:
            self.turns.stop()
        elif self.editing is not None:
            self._end_edit()
        elif self.focused is not None and self.focused.id == "filter":
            self.prompt.focus()
        self.refresh_bindings()

    @property
    def thinking(self) -> bool:
        """A reply is streaming, its answer has not started, and the model thinks (or an R1
        model will: its think block opens in the prompt)."""
        turn, engine = self.turn, self.app.engine
        return turn is not None and not turn.widget.answer_text and \
            bool(turn.widget.reasoning_text or (engine is not None and engine.info.is_r1))

    @property
    def _can_answer_now(self) -> bool:  # not a model on a server
        return self.app.engine is None or self.app.engine.info.can_answer_now

    def action_answer_now(self) -> None:
        """End the think block of the running turn: the model answers at once."""
        if not self._can_answer_now:  # from the command palette
            self.notify("A model on a server cannot be told to stop thinking.")
        elif self.thinking:
            self.turns.answer_now()
        else:  # from the command palette
            self.notify("The model is not thinking now.")

    @on(PromptInput.EditLastRequested)
    def action_edit_last(self) -> None:
        found = self._last_user_message("No message to edit yet.")
        if found is None:
            return
        self.edit_banner.start(found[1], self.prompt)
        self.prompt.focus()
        self.refresh_bindings()

    def _end_edit(self) -> None:
        self.edit_banner.end(self.prompt, keep_typed=self.turn is not None)
        self.refresh_bindings()

    async def action_answer_version(self, step: int) -> None:
        await self._switch_version("assistant", step)

    async def action_prompt_version(self, step: int) -> None:
        await self._switch_version("user", step)

    async def _switch_version(self, role: Role, step: int) -> None:
        if self.turn is not None or self.conversation is None:
            return
        try:
            result = self.conversations.step_version(role, step)
        except (LocalR1Error, ValueError) as exc:
            self._failed(exc)
            return
        if result == "at an end":
            self.app.bell()
        elif result == "switched":
            await self.open_conversation(self.conversation.id)

    # ---- copy, reasoning -------------------------------------------------------------------

    def _last_answer(self) -> AssistantMessage | None:
        return self.log_view.last_answer()

    def action_copy_answer(self) -> None:
        self.log_view.copy_answer()

    def action_copy_code(self, index: int | None = None) -> None:
        self.log_view.copy_code(index)

    def code_block_count(self) -> int:
        return self.log_view.code_block_count()

    def action_toggle_reasoning(self) -> None:
        if not self.log_view.toggle_last_reasoning():
            self.notify("No reasoning to show.")

    # ---- navigation ------------------------------------------------------------------------

    async def action_new_chat(self) -> None:
        await self.open_conversation(None)
        self.prompt.focus()

    def action_focus_search(self) -> None:
        if self.has_class("-narrow"):
            self.sidebar.add_class("-shown")
        self.sidebar.remove_class("-hidden")
        self.query_one("#filter", Input).focus()

    def action_toggle_sidebar(self) -> None:
        if self.has_class("-narrow"):
            self.sidebar.toggle_class("-shown")
        else:
            self.sidebar.toggle_class("-hidden")

    # ---- conversation actions --------------------------------------------------------------

    def action_rename(self) -> None:
        self.actions.rename()

    def action_pin(self) -> None:
        self.actions.toggle_pin()

    def action_delete(self) -> None:
        self.actions.delete()

    def action_export(self) -> None:
        self.actions.export()

    def action_settings(self) -> None:
        self.actions.settings()

