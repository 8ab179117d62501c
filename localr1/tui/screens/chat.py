"""The chat screen: sidebar, messages, prompt, status line; every chat action.

A turn runs in a thread worker that calls `ChatSession` (which saves everything) and appends
the streamed text to a `TurnBuffer`; a timer on this screen drains the buffer every
`FLUSH_SECONDS` into the message view. The worker posts `TurnEnded`/`TurnFailed` when done;
the next tick renders the rest, does the one full render and stops the timer. Only that timer
touches the streaming widgets, so no locking is needed on the UI side.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static

from localr1.errors import LocalR1Error
from localr1.store.database import Conversation, Message
from localr1.terminal_text import visible_controls
from localr1.tui.conversation_settings import ConversationSettings
from localr1.tui.formatting import literal, one_line
from localr1.tui.markdown_split import code_blocks
from localr1.tui.messages import ContextWasTrimmed, TurnEnded, TurnFailed
from localr1.tui.turn_buffer import Drained, TurnBuffer
from localr1.tui.widgets.model_header import ModelHeader
from localr1.tui.widgets.prompt_input import PromptInput
from localr1.tui.widgets.sidebar import ConversationSidebar
from localr1.tui.widgets.status_line import StatusFacts, StatusLine

if TYPE_CHECKING:
    from textual.widgets import Markdown

    from localr1.chat_session import ChatSession
    from localr1.engine.llama_engine import GenerationParams
    from localr1.tui.app import LocalR1App
    from localr1.tui.screens.settings import SettingsResult
    from localr1.tui.widgets.message_view import AssistantMessage, UserMessage, Versions


def _views():
    """The message widgets, imported on first use: they pull in the Markdown renderer
    (markdown-it, Pygments), which a fresh chat does not need for its first paint."""
    from localr1.tui.widgets import message_view

    return message_view

FLUSH_SECONDS = 0.1  # how often streamed text reaches the screen, at most
# While the model computes on the CPU, every millisecond the view spends is taken from
# llama.cpp's threads (measured here: ~25 ms of CPU for an update's append, layout and paint
# on two busy cores, and a stalled llama.cpp thread holds up its partner). So updates are
# spaced to keep the event loop's CPU time near UI_CPU_SHARE of the wall time (at most one
# update every MAX_FLUSH_SECONDS): ~3 updates a second on this 2-core VM, ~10 on a machine
# where an update costs 3 ms. Measured with bench/tui_overhead.py: rendering nothing until
# the end matches raw llama-cpp-python (1.03); every 0.1 s costs ~15%.
UI_CPU_SHARE = 0.03
MAX_FLUSH_SECONDS = 0.75
# While a turn runs, hand the GIL over sooner: the generating thread needs it briefly a few
# times per token, and with Python's 5 ms default a burst of UI work (mounting, layout) makes
# it wait that long each time (measured: a main thread 25% busy cost 18% of the tokens/s
# with 5 ms, 13% with 0.5 ms).
GIL_SWITCH_SECONDS = 0.0005
SHOWN_MESSAGES = 60  # older messages of a long conversation stay in the store (and exports)
NARROW_WIDTH = 80  # below this many columns the sidebar hides


@dataclass
class ActiveTurn:
    """One generation in flight: what the worker and the flush timer share."""

    id: int
    kind: Literal["send", "regenerate"]
    conversation_id: int
    text: str | None
    widget: AssistantMessage
    user_widget: UserMessage | None
    base_context: int | None
    buffer: TurnBuffer = field(default_factory=TurnBuffer)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    timer: Timer | None = None
    outcome: TurnEnded | TurnFailed | None = None
    trimmed: int = 0
    cpu_bound: bool = False  # the model runs (partly) on the CPU: pace the updates
    running: bool = False  # the worker started (it sets `done` when it ends)
    switch_interval: float = 0.005  # the GIL switch interval to restore at the end
    next_render_at: float = 0.0
    ui_cpu_mark: float | None = None  # time.thread_time() of the event loop at the last update


class ChatScreen(Screen[None]):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New"),
        Binding("escape", "stop", "Stop"),
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
        self.conversation: Conversation | None = None
        self.conv_settings: ConversationSettings | None = None
        self.turn: ActiveTurn | None = None
        self.editing: Message | None = None
        self._stashed_prompt = ""
        self._turn_seq = 0
        self._code_cursor: int | None = None
        self._pending: Callable[[], Awaitable[None] | None] | None = None
        self._context_used: int | None = None

    @property
    def app(self) -> LocalR1App:  # type: ignore[override]
        return super().app  # type: ignore[return-value]

    # ---- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ModelHeader(id="header")
        with Horizontal(id="main"):
            yield ConversationSidebar(self.app.store, id="sidebar")
            with Vertical(id="chat-pane"):
                yield VerticalScroll(id="chat-log")
                yield Static("", id="edit-banner")
                yield PromptInput(id="prompt", placeholder="Message (enter sends, ctrl+j or "
                                  "shift+enter: new line, f1: keys)")
                yield StatusLine(id="status", show_timings=self.app.show_timings)
        yield Footer()

    @property
    def log_view(self) -> VerticalScroll:
        return self.query_one("#chat-log", VerticalScroll)

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
        self.query_one("#edit-banner").display = False
        if not self.app.show_timings:
            self.prompt.cursor_blink = False  # deterministic screenshots
        self.sidebar.reload(self._initial_id)
        await self.open_conversation(self._initial_id)
        self.model_changed()
        self.prompt.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return True if self.turn is not None or self.editing is not None else None
        return True

    # ---- the model -------------------------------------------------------------------------

    def model_changed(self) -> None:
        """The app loaded, failed to load or started loading a model."""
        app = self.app
        if app.model_state == "loading":
            self.header.show_model(None, loading=app.loading_label)
        elif app.engine is not None:
            self.header.show_model(app.engine.info)
        else:
            self.header.show_model(None, problem=app.model_problem)
        self._show_idle_status()
        if app.model_state == "loading":
            return
        pending, self._pending = self._pending, None
        if pending is not None and app.engine is not None and app.model_state == "ready":
            self.call_later(pending)  # what waited for this model (a send, a regenerate)

    def _model_ready_for_turn(self, then: Callable[[], Awaitable[None] | None]) -> bool:
        """True when the engine fits this conversation's settings; otherwise arrange for it
        (a load in a worker) and run `then` once it is ready."""
        app = self.app
        if app.model_state == "loading":
            self._pending = then
            self.notify("The model is still loading; this runs when it is ready.")
            return False
        if app.engine is None:
            self.notify("No model is loaded: ctrl+l picks one.", severity="warning")
            return False
        assert self.conv_settings is not None
        if app.model_path is not None and app.engine_config is not None:
            wanted = self.conv_settings.engine_config(app.model_path, app.settings)
            # A config that failed to load is not tried again: the loaded model answers.
            if wanted != app.engine_config and wanted not in app.failed_configs:
                self._pending = then
                app.load_model(wanted)
                self.notify("Reloading the model with this conversation's context size and "
                            "GPU layers…")
                return False
        return True

    # ---- opening conversations --------------------------------------------------------------

    async def open_conversation(self, conversation_id: int | None) -> None:
        if self.turn is not None:
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        store = self.app.store
        conversation, messages = None, []
        if conversation_id is not None:
            try:
                conversation = store.conversation(conversation_id)
                messages = store.branch(conversation_id)
            except LocalR1Error as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
        self.conversation = conversation
        self.conv_settings = self.app.settings_for(conversation)
        self._end_edit(restore=True)
        self._code_cursor = None
        self._context_used = _context_of(messages)
        await self._rebuild_log(messages)
        self.header.show_title(conversation.title if conversation else None)
        self.sidebar.current_id = conversation_id
        self.sidebar._highlight_current()
        self._show_idle_status()

    async def _rebuild_log(self, messages: list[Message]) -> None:
        log = self.log_view
        visible = [m for m in messages if m.role != "system"]
        widgets: list = []
        hidden = len(visible) - SHOWN_MESSAGES
        if hidden > 0:
            visible = visible[-SHOWN_MESSAGES:]
            widgets.append(Static(f"{hidden} earlier messages are not shown here; ctrl+s "
                                  "exports the whole conversation.", classes="earlier"))
        last_user = next((m for m in reversed(visible) if m.role == "user"), None)
        last_answer = next((m for m in reversed(visible) if m.role == "assistant"), None)
        for message in visible:
            versions = self._versions(message) if message in (last_user, last_answer) else None
            if message.role == "user":
                widgets.append(_views().UserMessage(message.content, message.id, versions))
            else:
                widgets.append(self._answer_widget(message, versions))
        if not visible:
            widgets.append(_empty_state())
        # No batch_update around awaits: Textual drops every paint while a batch is open.
        await log.remove_children()
        await log.mount_all(widgets)
        log.scroll_end(animate=False, immediate=True)
        log.anchor()

    def _answer_widget(self, message: Message | None, versions: Versions | None = None,
                       ) -> AssistantMessage:
        app = self.app
        label = message.model if message is not None else app.model_label
        expect_reasoning = message is None and app.engine is not None and app.engine.info.is_r1
        return _views().AssistantMessage(model_label=label, message=message, versions=versions,
                                keep_reasoning_open=app.prefs.keep_reasoning_open,
                                show_timings=app.show_timings,
                                expect_reasoning=expect_reasoning)


    def _last_user_message(self, nothing_text: str):
        """(active branch, its last user message) to regenerate or edit; None after telling
        the user why not (a reply still streaming, or nothing sent yet)."""
        if self.turn is not None:
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return None
        if self.conversation is None:
            self.notify(nothing_text)
            return None
        try:
            branch = self.app.store.branch(self.conversation.id)
        except LocalR1Error as exc:
            self.notify(str(exc), severity="error", markup=False)
            return None
        last_user = next((m for m in reversed(branch) if m.role == "user"), None)
        if last_user is None:
            self.notify(nothing_text)
            return None
        return branch, last_user
    def _versions(self, message: Message) -> Versions | None:
        try:
            siblings = self.app.store.alternates(message.id)
        except LocalR1Error:
            return None
        ids = [m.id for m in siblings]
        return _views().Versions(ids.index(message.id) + 1, len(ids)) \
            if message.id in ids else None

    @on(ConversationSidebar.Selected)
    async def _conversation_selected(self, event: ConversationSidebar.Selected) -> None:
        await self.open_conversation(event.conversation_id)
        if self.has_class("-narrow"):
            self.sidebar.remove_class("-shown")
        self.prompt.focus()

    # ---- sending ----------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        await self.send()

    async def send(self) -> None:
        """Send what the prompt holds (as an edit, in edit mode)."""
        text = self.prompt.text
        if not text.strip():
            return
        if self.turn is not None:
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        if not self._model_ready_for_turn(self.send):
            return
        app, settings = self.app, self.conv_settings
        assert settings is not None
        editing = self.editing
        if self.conversation is None:
            try:
                self.conversation = app.store.create_conversation(
                    model=app.model_label, system_prompt=settings.system_prompt,
                    params=settings.params_json(app.settings))
            except LocalR1Error as exc:
                self.notify(str(exc), severity="error", markup=False)
                return  # the prompt keeps its text
            app.new_chat_settings = None
        parent: int | None | EllipsisType = ... if editing is None else editing.parent_id
        log = self.log_view
        if editing is not None:
            await self._remove_from(editing.id)
        await log.query(".empty").remove()
        user_widget = _views().UserMessage(text)
        widget = self._answer_widget(None)
        await log.mount_all([user_widget, widget])
        log.anchor()
        self.prompt.clear()
        self._end_edit(restore=True)
        self._start_turn("send", text=text, parent_id=parent, user_message_id=None,
                         user_widget=user_widget, widget=widget)

    async def action_regenerate(self) -> None:
        found = self._last_user_message("Nothing to regenerate yet.")
        if found is None:
            return
        branch, last_user = found
        if not self._model_ready_for_turn(self.action_regenerate):
            return
        user_widget = self._user_widget(last_user.id)
        if user_widget is None:
            await self._rebuild_log(branch)
            user_widget = self._user_widget(last_user.id)
        assert user_widget is not None
        await self._remove_after(user_widget)
        widget = self._answer_widget(None)
        await self.log_view.mount(widget)
        self.log_view.anchor()
        self._start_turn("regenerate", text=None, parent_id=..., user_message_id=last_user.id,
                         user_widget=user_widget, widget=widget)

    def _start_turn(self, kind: Literal["send", "regenerate"], *, text: str | None,
                    parent_id: int | None | EllipsisType, user_message_id: int | None,
                    user_widget: UserMessage | None, widget: AssistantMessage) -> None:
        app, settings = self.app, self.conv_settings
        assert self.conversation is not None and settings is not None
        assert app.engine is not None
        turn = self.start_stream(kind, self.conversation.id, text, widget, user_widget)
        info = app.engine.info
        turn.cpu_bound = info.gpu_layers < info.n_layers + 1
        from localr1.chat_session import ChatSession  # with the engine, after the first paint

        session = ChatSession(app.store, app.engine, app.model_label)
        params = settings.generation_params(app.settings)
        # Start generating once the new messages are painted: that layout work would
        # otherwise compete with the model for the CPU during its first tokens.
        self.call_after_refresh(self._generate, turn, session, params, parent_id,
                                user_message_id)

    def start_stream(self, kind: Literal["send", "regenerate"], conversation_id: int,
                     text: str | None, widget: AssistantMessage,
                     user_widget: UserMessage | None) -> ActiveTurn:
        """The UI half of a turn: the shared buffer and the flush timer. Whoever fills
        `turn.buffer` (the generating worker; bench/tui_stream.py's replay) posts TurnEnded
        or TurnFailed when done."""
        self._turn_seq += 1
        turn = ActiveTurn(self._turn_seq, kind, conversation_id, text, widget, user_widget,
                          self._context_used)
        self.turn = turn
        self._code_cursor = None
        self.prompt.cursor_blink = False  # no repaints the generation would pay for
        turn.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(turn.switch_interval, GIL_SWITCH_SECONDS))
        turn.timer = self.set_interval(FLUSH_SECONDS, self._tick)
        self.refresh_bindings()
        self.status.show(StatusFacts("waiting for the model", context_limit=self._n_ctx()))
        return turn

    @work(thread=True, group="turn", exit_on_error=False)
    def _generate(self, turn: ActiveTurn, session: ChatSession, params: GenerationParams,
                  parent_id: int | None | EllipsisType, user_message_id: int | None) -> None:
        """The worker: core calls only; text goes to the buffer, the end to a message."""
        from localr1.chat_session import TurnSaved
        from localr1.engine.llama_engine import (
            AnswerDelta,
            ContextTrimmed,
            ReasoningDelta,
            TurnDone,
        )

        turn.running = True
        stats, saved = None, None
        try:
            if turn.kind == "send":
                assert turn.text is not None
                events = session.send(turn.conversation_id, turn.text, params,
                                      parent_id=parent_id, cancel=turn.cancel)
            else:
                assert user_message_id is not None
                events = session.regenerate(turn.conversation_id, user_message_id, params,
                                            cancel=turn.cancel)
            for event in events:
                if isinstance(event, ReasoningDelta):
                    turn.buffer.add("reasoning", event.text)
                elif isinstance(event, AnswerDelta):
                    turn.buffer.add("answer", event.text)
                elif isinstance(event, ContextTrimmed):
                    self.post_message(ContextWasTrimmed(turn.id, event.dropped_messages))
                elif isinstance(event, TurnDone):
                    stats = event.stats
                elif isinstance(event, TurnSaved):
                    saved = event
        except LocalR1Error as exc:
            self.post_message(TurnFailed(turn.id, str(exc)))
        except Exception as exc:  # a bug or a llama.cpp surprise: say so, keep the app alive
            self.post_message(TurnFailed(turn.id, f"unexpected error: {type(exc).__name__}: "
                                         f"{one_line(str(exc))}"))
        else:
            self.post_message(TurnEnded(turn.id, stats, saved))
        finally:
            turn.done.set()

    def on_turn_ended(self, message: TurnEnded) -> None:
        if self.turn is not None and self.turn.id == message.turn_id:
            self.turn.outcome = message  # the next tick renders the rest and finishes

    def on_turn_failed(self, message: TurnFailed) -> None:
        if self.turn is not None and self.turn.id == message.turn_id:
            self.turn.outcome = message

    def on_context_was_trimmed(self, message: ContextWasTrimmed) -> None:
        if self.turn is not None and self.turn.id == message.turn_id:
            self.turn.trimmed = message.dropped_messages
        self.notify(f"The oldest {message.dropped_messages} messages were left out so the "
                    "conversation fits the context window.", severity="warning")

    # ---- the flush timer ---------------------------------------------------------------------

    async def _tick(self) -> None:
        turn = self.turn
        if turn is None:
            return
        started = time.perf_counter()
        if turn.outcome is None and started < turn.next_render_at:
            return  # pacing: see UI_CPU_SHARE
        try:
            await self._render_buffer(turn)
            if turn.outcome is not None:
                await self._finish_turn(turn)
        except Exception as exc:  # never let a rendering surprise take the app down
            sys.setswitchinterval(turn.switch_interval)
            self.turn = None
            self.prompt.cursor_blink = self.app.show_timings
            self.refresh_bindings()
            turn.cancel.set()
            self.notify(f"display error: {type(exc).__name__}: {one_line(str(exc))}",
                        severity="error", markup=False)
        if turn.outcome is not None or self.turn is not turn:
            assert turn.timer is not None
            turn.timer.stop()  # last: it cancels this very task at its next await
        elif turn.cpu_bound:
            self._pace(turn, started)

    def _pace(self, turn: ActiveTurn, now: float) -> None:
        """When the next update may come: the CPU time this (event-loop) thread spent since
        the previous update, its layout and paint and everything else included, divided by
        the share the view may take."""
        cpu = time.thread_time()
        spent = cpu - turn.ui_cpu_mark if turn.ui_cpu_mark is not None else 0.0
        turn.ui_cpu_mark = cpu
        turn.next_render_at = now + min(MAX_FLUSH_SECONDS,
                                        max(FLUSH_SECONDS, spent / UI_CPU_SHARE))

    async def _render_buffer(self, turn: ActiveTurn) -> Drained:
        drained = turn.buffer.drain()
        if drained.reasoning:
            await turn.widget.add_reasoning(drained.reasoning, drained.reasoning_started_at)
        if drained.answer:
            await turn.widget.add_answer(drained.answer, drained.answer_started_at)
        log = self.log_view
        following = log.is_anchored and log.max_scroll_y - log.scroll_y <= 2
        turn.widget.tick(log.region.y, following=following)
        if drained.first_token_at is not None:
            thinking = drained.answer_started_at is None and \
                drained.reasoning_started_at is not None
            used = (turn.base_context or 0) + drained.tokens if turn.base_context else None
            self.status.show(StatusFacts(
                "thinking" if thinking else "generating",
                tokens_per_second=drained.tokens_per_second(),
                ttft_seconds=drained.first_token_at - turn.buffer.started_at,
                context_used=used, context_limit=self._n_ctx(), generated=drained.tokens))
        return drained

    async def _finish_turn(self, turn: ActiveTurn) -> None:
        outcome = turn.outcome
        store = self.app.store
        stored: Message | None = None
        stats = outcome.stats if isinstance(outcome, TurnEnded) else None
        if isinstance(outcome, TurnEnded) and outcome.saved is not None:
            if turn.user_widget is not None:
                turn.user_widget.message_id = outcome.saved.user_message_id
            try:
                stored = store.message(outcome.saved.assistant_message_id)
            except LocalR1Error:
                stored = None
        sys.setswitchinterval(turn.switch_interval)
        await turn.widget.finish(stats, stored)
        self.turn = None
        self.prompt.cursor_blink = self.app.show_timings
        self.refresh_bindings()
        if isinstance(outcome, TurnFailed):
            self.notify(outcome.error, title="Generation failed", severity="error",
                        markup=False, timeout=12)
            await self._recover(turn)
            return
        if stats is not None:
            self._context_used = stats.prompt_tokens + stats.completion_tokens
        if stored is not None:
            turn.widget.set_versions(self._versions(stored))
            if turn.user_widget is not None and turn.user_widget.message_id is not None:
                with contextlib.suppress(LocalR1Error):
                    turn.user_widget.set_versions(self._versions(
                        store.message(turn.user_widget.message_id)))
        self._refresh_conversation()
        self._show_idle_status(stats)

    async def _recover(self, turn: ActiveTurn) -> None:
        """After a failed turn: show what the store really holds; give the text back to the
        prompt unless it was saved (nothing typed is lost)."""
        store = self.app.store
        try:
            conversation = store.conversation(turn.conversation_id)
            branch = store.branch(turn.conversation_id)
        except LocalR1Error:
            conversation, branch = None, []
        saved = turn.text is None or any(m.role == "user" and m.content == turn.text
                                         for m in branch[-2:])
        if conversation is not None and not conversation.message_count:
            with contextlib.suppress(LocalR1Error):  # made for this message, holds nothing
                store.delete_conversation(conversation.id)
            conversation = None
        await self.open_conversation(conversation.id if conversation else None)
        if not saved and turn.text:
            current = self.prompt.text
            self.prompt.text = turn.text + ("\n\n" + current if current.strip() else "")
            self.prompt.move_cursor(self.prompt.document.end)
        self.sidebar.reload(self.conversation.id if self.conversation else None)

    def _refresh_conversation(self) -> None:
        if self.conversation is None:
            return
        try:
            self.conversation = self.app.store.conversation(self.conversation.id)
        except LocalR1Error:
            return
        self.header.show_title(self.conversation.title)
        self.sidebar.reload(self.conversation.id)

    def _n_ctx(self) -> int | None:
        engine = self.app.engine
        return engine.info.n_ctx if engine is not None else None

    def _show_idle_status(self, stats=None) -> None:
        app = self.app
        if self.turn is not None:
            return
        state = {"loading": "loading model", "ready": "ready"}.get(app.model_state, "no model")
        if stats is not None:
            self.status.show(StatusFacts(
                state, tokens_per_second=stats.tokens_per_second,
                ttft_seconds=stats.ttft_seconds, context_used=self._context_used,
                context_limit=self._n_ctx(), generated=stats.completion_tokens))
        else:
            self.status.show(StatusFacts(state, context_used=self._context_used,
                                         context_limit=self._n_ctx()))

    # ---- stop, edit, versions ----------------------------------------------------------------

    def action_stop(self) -> None:
        if self.turn is not None:
            self.turn.cancel.set()
            self.status.show(StatusFacts("stopping…", context_limit=self._n_ctx()))
        elif self.editing is not None:
            self._end_edit(restore=True)
        elif self.focused is not None and self.focused.id == "filter":
            self.sidebar.clear_filter()
            self.prompt.focus()

    @on(PromptInput.EditLastRequested)
    def action_edit_last(self) -> None:
        found = self._last_user_message("No message to edit yet.")
        if found is None:
            return
        branch, last_user = found
        if self.editing is None:
            self._stashed_prompt = self.prompt.text
        self.editing = last_user
        self.prompt.text = last_user.content
        self.prompt.move_cursor(self.prompt.document.end)
        banner = self.query_one("#edit-banner", Static)
        banner.update("Editing your last message: enter sends it as a new version "
                      "(the old one stays, alt+↑/↓), esc cancels.")
        banner.display = True
        self.prompt.focus()
        self.refresh_bindings()

    def _end_edit(self, *, restore: bool) -> None:
        was_editing = self.editing is not None
        self.editing = None
        if self.is_mounted:
            self.query_one("#edit-banner").display = False
        if was_editing and restore:
            stashed, self._stashed_prompt = self._stashed_prompt, ""
            if self.prompt.text.strip() == "" or self.turn is None:
                self.prompt.text = stashed
        self.refresh_bindings()

    async def action_answer_version(self, step: int) -> None:
        await self._switch_version("assistant", step)

    async def action_prompt_version(self, step: int) -> None:
        await self._switch_version("user", step)

    async def _switch_version(self, role: str, step: int) -> None:
        if self.turn is not None or self.conversation is None:
            return
        store = self.app.store
        try:
            branch = store.branch(self.conversation.id)
            message = next((m for m in reversed(branch) if m.role == role), None)
            if message is None:
                return
            siblings = store.alternates(message.id)
            index = [m.id for m in siblings].index(message.id) + step
            if not 0 <= index < len(siblings):
                self.app.bell()
                return
            store.set_active_leaf(self.conversation.id, siblings[index].id)
        except (LocalR1Error, ValueError) as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        await self.open_conversation(self.conversation.id)

    async def _remove_from(self, message_id: int) -> None:
        """Remove the user message `message_id` and everything after it from the view."""
        widget = self._user_widget(message_id)
        if widget is None:
            return
        await self._remove_after(widget)
        await widget.remove()

    async def _remove_after(self, widget) -> None:
        children = list(self.log_view.children)
        await self.log_view.remove_children(children[children.index(widget) + 1:])

    def _user_widget(self, message_id: int) -> UserMessage | None:
        for widget in self.log_view.query_children(_views().UserMessage):
            if widget.message_id == message_id:
                return widget
        return None

    def _last_answer(self) -> AssistantMessage | None:
        answers = list(self.log_view.query_children(_views().AssistantMessage))
        return answers[-1] if answers else None

    # ---- copy, reasoning -------------------------------------------------------------------

    def action_copy_answer(self) -> None:
        answer = self._last_answer()
        if answer is None or not answer.answer_text:
            self.notify("No answer to copy yet.")
            return
        text = visible_controls(answer.answer_text)
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the answer ({len(text):,} characters).")

    def action_copy_code(self, index: int | None = None) -> None:
        answer = self._last_answer()
        blocks = code_blocks(answer.answer_text) if answer is not None else []
        if not blocks:
            self.notify("The last answer has no code block.")
            return
        if index is None:  # again and again: the one before, wrapping around
            index = len(blocks) - 1 if self._code_cursor is None else \
                (self._code_cursor - 1) % len(blocks)
        index = max(0, min(index, len(blocks) - 1))
        self._code_cursor = index
        self.app.copy_to_clipboard(visible_controls(blocks[index].code))
        self.notify(f"Copied code block {index + 1}/{len(blocks)} "
                    f"({visible_controls(blocks[index].summary)}).", markup=False)

    def code_block_count(self) -> int:
        answer = self._last_answer()
        return len(code_blocks(answer.answer_text)) if answer is not None else 0

    def action_toggle_reasoning(self) -> None:
        for answer in reversed(list(self.log_view.query_children(_views().AssistantMessage))):
            if answer.reasoning is not None:
                answer.reasoning.collapsed = not answer.reasoning.collapsed
                if not answer.reasoning.collapsed:
                    self.log_view.release_anchor()
                    answer.reasoning.scroll_visible(animate=False, top=True)
                return
        self.notify("No reasoning to show.")

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        # Model output chooses its links: never open them, offer to copy instead.
        event.stop()
        self.app.copy_to_clipboard(event.href)
        self.notify(Content.assemble("Link copied (not opened): ", literal(event.href)))

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

    def _need_conversation(self) -> Conversation | None:
        if self.conversation is None:
            self.notify("Send a message first: this chat is not saved yet.")
        return self.conversation

    def action_rename(self) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return

        def renamed(title: str | None) -> None:
            if title is None:
                return
            try:
                self.app.store.rename(conversation.id, title)
            except LocalR1Error as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            self._refresh_conversation()

        from localr1.tui.screens.dialogs import TextPromptScreen

        self.app.push_screen(TextPromptScreen("Rename the conversation:",
                                              conversation.title or ""), renamed)

    def action_pin(self) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return
        try:
            self.app.store.set_pinned(conversation.id, not conversation.pinned)
        except LocalR1Error as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify("Unpinned." if conversation.pinned else "Pinned to the top.")
        self._refresh_conversation()

    def action_delete(self) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return
        if self.turn is not None:
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        question = Content.assemble("Delete the conversation\n",
                                    (one_line(visible_controls(conversation.title or
                                                               "Untitled")), "bold"),
                                    "\nand all its messages? This cannot be undone.")

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.app.store.delete_conversation(conversation.id)
            except LocalR1Error as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            await self.open_conversation(None)
            self.sidebar.reload(None)
            self.notify("Deleted.")

        from localr1.tui.screens.dialogs import ConfirmScreen

        self.app.push_screen(ConfirmScreen(question), answered)

    def action_export(self) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return
        from localr1.tui.screens.dialogs import ConfirmScreen, TextPromptScreen

        slug = re.sub(r"[^A-Za-z0-9]+", "-", conversation.title or "").strip("-").lower()[:40]
        default = Path.cwd() / f"{slug or 'conversation'}-{conversation.id}.md"

        def chosen(answer: str | None) -> None:
            if not answer or not answer.strip():
                return
            path = Path(answer.strip()).expanduser()
            if path.exists():
                self.app.push_screen(ConfirmScreen(Content(f"{path} exists. Overwrite it?"),
                                                   yes="Overwrite"),
                                     lambda yes: self._export_to(conversation.id, path)
                                     if yes else None)
            else:
                self._export_to(conversation.id, path)

        self.app.push_screen(TextPromptScreen("Export to this Markdown file (reasoning "
                                              "included):", str(default)), chosen)

    def _export_to(self, conversation_id: int, path: Path) -> None:
        try:
            text = self.app.store.conversation_markdown(conversation_id, include_reasoning=True)
            path.write_text(text, encoding="utf-8")
        except (LocalR1Error, OSError) as exc:
            self.notify(f"Export failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"Exported to {path.resolve()}", markup=False, timeout=8)

    def action_settings(self) -> None:
        from localr1.tui.screens.settings import SettingsScreen

        app = self.app
        assert self.conv_settings is not None
        editable = self.conversation is None or app.can_save_system_prompt
        note = "" if editable else ("The system prompt can only be set before the first "
                                    "message for now (the store cannot change it yet).")
        if self.conversation is not None and not app.can_save_params:
            note = (note + " " if note else "") + ("Changes apply to this session; the store "
                                                   "cannot save them with the conversation yet.")
        app.push_screen(SettingsScreen(self.conv_settings, app.prefs.keep_reasoning_open,
                                       system_prompt_editable=editable, note=note),
                        self._apply_settings)

    def _apply_settings(self, result: SettingsResult | None) -> None:
        if result is None:
            return
        app = self.app
        if result.keep_reasoning_open != app.prefs.keep_reasoning_open:
            app.set_keep_reasoning_open(result.keep_reasoning_open)
        self.conv_settings = result.settings
        if self.conversation is None:
            app.new_chat_settings = result.settings
        else:
            app.save_conversation_settings(self.conversation, result.settings)
        if app.model_path is not None and app.engine_config is not None and self.turn is None:
            wanted = result.settings.engine_config(app.model_path, app.settings)
            if wanted != app.engine_config:
                app.load_model(wanted)
        self.notify("Settings saved.")


def _empty_state() -> Static:
    return Static(Content.assemble(
        ("Ask anything.", "bold"),
        "\n\nenter sends · shift+enter or ctrl+j adds a line · ctrl+p lists every action · "
        "f1 shows the keys"), classes="empty")


def _context_of(messages: list[Message]) -> int | None:
    for message in reversed(messages):
        if message.role == "assistant" and message.prompt_tokens is not None:
            return message.prompt_tokens + (message.completion_tokens or 0)
    return None
