"""The chat screen's turns: one at a time, streamed by a worker, shown by a paced timer.

A turn starts once the loaded model suits the conversation (a send waits for a load under
way, or for the reload to its context size and GPU layers). It runs in a thread worker that
calls `ChatSession` (which saves everything) and appends the streamed text to a `TurnBuffer`;
a timer on the screen drains the buffer every `FLUSH_SECONDS` (slower while the model
computes on the CPU) into the answer widget. The worker posts `TurnEnded`/`TurnFailed`; the
screen hands them to `TurnRunner.ended`, and the next tick renders the rest, does the one full
render and stops the timer. Only that timer touches the streaming widgets, so no locking is
needed on the UI side. The runner also keeps the status line: live figures during a turn, the
model's state, the last turn's speed and the context used between turns. A failed turn says
why in the app's terms (`turn_errors`), under the answer and kept with the conversation;
`answer_now` asks a thinking turn to answer at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from types import EllipsisType
from typing import TYPE_CHECKING, Literal

from textual.timer import Timer

from localr1.store.records import utc_now
from localr1.tui.formatting import one_line
from localr1.tui.messages import ContextWasTrimmed, TurnEnded, TurnFailed
from localr1.tui.turn_buffer import Drained, TurnBuffer
from localr1.tui.turn_errors import remember_turn_error, turn_error_text
from localr1.tui.widgets.status_line import StatusFacts

if TYPE_CHECKING:
    from localr1.chat_session import ChatSession
    from localr1.engine.events import GenerationParams, TurnStats
    from localr1.store import Message
    from localr1.tui.conversation_settings import ConversationSettings
    from localr1.tui.screens.chat import ChatScreen
    from localr1.tui.widgets.message_view import AssistantMessage, UserMessage

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

TurnKind = Literal["send", "regenerate"]


@dataclass
class ActiveTurn:
    """One generation in flight: what the worker and the flush timer share."""

    id: int
    kind: TurnKind
    conversation_id: int
    text: str | None
    widget: AssistantMessage
    user_widget: UserMessage | None
    base_context: int | None
    buffer: TurnBuffer = field(default_factory=TurnBuffer)
    cancel: threading.Event = field(default_factory=threading.Event)
    answer_now: threading.Event = field(default_factory=threading.Event)  # end the thinking
    done: threading.Event = field(default_factory=threading.Event)
    timer: Timer | None = None
    outcome: TurnEnded | TurnFailed | None = None
    trimmed: int = 0
    cpu_bound: bool = False  # the model runs (partly) on the CPU: pace the updates
    running: bool = False  # the worker started (it sets `done` when it ends)
    switch_interval: float = 0.005  # the GIL switch interval to restore at the end
    cursor_blink: bool = True  # the prompt's, to restore at the end
    started_at: str = field(default_factory=utc_now)  # in the store's time: what it wrote since
    next_render_at: float = 0.0
    ui_cpu_mark: float | None = None  # time.thread_time() of the event loop at the last update


class TurnRunner:
    """Starts the chat screen's turns once the model suits them, streams them into its answer
    widgets and keeps its status line; a failed turn goes back to the screen's
    `turn_failed`."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.active: ActiveTurn | None = None
        self.started = 0  # turns started so far (their ids)
        self.context_used: int | None = None  # by the open conversation, as last counted
        self._waiting: Callable[[], Awaitable[None] | None] | None = None

    # ---- the model -------------------------------------------------------------------------

    def ready_for_turn(self, settings: ConversationSettings,
                       then: Callable[[], Awaitable[None] | None]) -> bool:
        """True when the engine fits the conversation's `settings`; otherwise arrange for it
        (a load in a worker) and run `then` once it is ready."""
        screen, app = self.screen, self.screen.app
        if app.model_state == "loading":
            self._waiting = then
            screen.notify("The model is still loading; this runs when it is ready.")
            return False
        if app.engine is None:
            screen.notify("No model is loaded: ctrl+l picks one.", severity="warning")
            return False
        if app.model_path is not None and app.engine_config is not None:
            wanted = app.engine_config_for(settings, app.model_path)
            # A config that failed to load is not tried again: the loaded model answers.
            if wanted != app.engine_config and wanted not in app.failed_configs:
                self._waiting = then
                app.load_model(wanted)
                screen.notify("Reloading the model with this conversation's context size, "
                              "GPU layers, KV cache and draft…")
                return False
        return True

    def model_changed(self) -> None:
        """The app loaded, failed to load or started loading a model: once it is ready, run
        what waited for it (a send, a regenerate)."""
        app = self.screen.app
        self.show_idle_status()
        if app.model_state == "loading":
            return
        waiting, self._waiting = self._waiting, None
        if waiting is not None and app.engine is not None and app.model_state == "ready":
            self.screen.call_later(waiting)

    def context_limit(self) -> int | None:
        engine = self.screen.app.engine
        return engine.info.n_ctx if engine is not None else None

    def show_idle_status(self, stats: TurnStats | None = None) -> None:
        """The status line between turns: the model's state, the last turn's figures."""
        if self.active is not None:
            return
        state = {"loading": "loading model", "ready": "ready"}.get(self.screen.app.model_state,
                                                                   "no model")
        if stats is not None:
            self.screen.status.show(StatusFacts(
                state, tokens_per_second=stats.tokens_per_second,
                ttft_seconds=stats.ttft_seconds, context_used=self.context_used,
                context_limit=self.context_limit(), generated=stats.completion_tokens,
                draft_acceptance=stats.acceptance_rate))
        else:
            self.screen.status.show(StatusFacts(state, context_used=self.context_used,
                                                context_limit=self.context_limit()))

    # ---- a turn ----------------------------------------------------------------------------

    def start(self, kind: TurnKind, conversation_id: int, settings: ConversationSettings, *,
              text: str | None, parent_id: int | None | EllipsisType,
              user_message_id: int | None, user_widget: UserMessage | None,
              widget: AssistantMessage) -> None:
        """Stream a turn through `ChatSession` with the app's loaded engine."""
        app = self.screen.app
        assert app.engine is not None
        turn = self.start_stream(kind, conversation_id, text, widget, user_widget,
                                 self.context_used)
        info = app.engine.info
        turn.cpu_bound = info.gpu_layers < info.n_layers + 1
        from localr1.chat_session import ChatSession  # with the engine, after the first paint

        session = ChatSession(app.store, app.engine, app.model_label)
        params = settings.generation_params(app.settings)
        # Start generating once the new messages are painted: that layout work would
        # otherwise compete with the model for the CPU during its first tokens.
        self.screen.call_after_refresh(self._run_worker, turn, session, params, parent_id,
                                       user_message_id)

    def start_stream(self, kind: TurnKind, conversation_id: int, text: str | None,
                     widget: AssistantMessage, user_widget: UserMessage | None,
                     base_context: int | None = None) -> ActiveTurn:
        """The UI half of a turn: the shared buffer and the flush timer. Whoever fills
        `turn.buffer` (the generating worker; bench/tui_stream.py's replay) posts TurnEnded
        or TurnFailed to the screen when done."""
        screen = self.screen
        self.started += 1
        turn = ActiveTurn(self.started, kind, conversation_id, text, widget, user_widget,
                          base_context)
        self.active = turn
        turn.cursor_blink = screen.prompt.cursor_blink
        screen.prompt.cursor_blink = False  # no repaints the generation would pay for
        turn.switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(turn.switch_interval, GIL_SWITCH_SECONDS))
        turn.timer = screen.set_interval(FLUSH_SECONDS, self._tick)
        screen.refresh_bindings()
        screen.status.show(StatusFacts("waiting for the model",
                                       context_limit=self.context_limit()))
        return turn

    def stop(self) -> None:
        """Ask the running turn to stop; its partial answer is saved as stopped."""
        if self.active is not None:
            self.active.cancel.set()
            self.screen.status.show(StatusFacts("stopping…", context_limit=self.context_limit()))

    def answer_now(self) -> bool:
        """Ask the running turn to stop thinking and answer at once (the engine closes its
        think block; past it, nothing changes); False when no turn runs or it was asked."""
        turn = self.active
        if turn is None or turn.answer_now.is_set():
            return False
        turn.answer_now.set()
        return True

    # ---- the worker ------------------------------------------------------------------------

    def _run_worker(self, turn: ActiveTurn, session: ChatSession, params: GenerationParams,
                    parent_id: int | None | EllipsisType, user_message_id: int | None) -> None:
        self.screen.run_worker(partial(self._generate, turn, session, params, parent_id,
                                       user_message_id),
                               name="_generate", group="turn", thread=True,
                               exit_on_error=False)

    def _generate(self, turn: ActiveTurn, session: ChatSession, params: GenerationParams,
                  parent_id: int | None | EllipsisType, user_message_id: int | None) -> None:
        """The worker: core calls only; text goes to the buffer, the end to a message."""
        from localr1.chat_session import TurnSaved
        from localr1.engine.events import AnswerDelta, ContextTrimmed, ReasoningDelta, TurnDone

        post = self.screen.post_message  # thread-safe
        turn.running = True
        stats, saved = None, None
        try:
            if turn.kind == "send":
                assert turn.text is not None
                events = session.send(turn.conversation_id, turn.text, params,
                                      parent_id=parent_id, cancel=turn.cancel,
                                      answer_now=turn.answer_now)
            else:
                assert user_message_id is not None
                events = session.regenerate(turn.conversation_id, user_message_id, params,
                                            cancel=turn.cancel, answer_now=turn.answer_now)
            for event in events:
                if isinstance(event, ReasoningDelta):
                    turn.buffer.add("reasoning", event.text)
                elif isinstance(event, AnswerDelta):
                    turn.buffer.add("answer", event.text)
                elif isinstance(event, ContextTrimmed):
                    post(ContextWasTrimmed(turn.id, event.dropped_messages))
                elif isinstance(event, TurnDone):
                    stats = event.stats
                elif isinstance(event, TurnSaved):
                    saved = event
        except Exception as exc:  # a LocalR1Error, a bug or a llama.cpp surprise: say so
            post(TurnFailed(turn.id, turn_error_text(exc, session.engine.info,
                                                     params.max_tokens)))
        else:
            post(TurnEnded(turn.id, stats, saved))
        finally:
            turn.done.set()

    # ---- what the worker posts -------------------------------------------------------------

    def ended(self, outcome: TurnEnded | TurnFailed) -> None:
        if self.active is not None and self.active.id == outcome.turn_id:
            self.active.outcome = outcome  # the next tick renders the rest and finishes

    def trimmed(self, message: ContextWasTrimmed) -> None:
        if self.active is not None and self.active.id == message.turn_id:
            self.active.trimmed = message.dropped_messages

    # ---- the flush timer -------------------------------------------------------------------

    async def _tick(self) -> None:
        turn = self.active
        if turn is None:
            return
        started = time.perf_counter()
        if turn.outcome is None and started < turn.next_render_at:
            return  # pacing: see UI_CPU_SHARE
        try:
            await self._render_buffer(turn)
            if turn.outcome is not None:
                await self._finish(turn)
        except Exception as exc:  # never let a rendering surprise take the app down
            sys.setswitchinterval(turn.switch_interval)
            self._release()
            turn.cancel.set()
            self.screen.notify(f"display error: {type(exc).__name__}: {one_line(str(exc))}",
                               severity="error", markup=False)
        if turn.outcome is not None or self.active is not turn:
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
        screen = self.screen
        drained = turn.buffer.drain()
        thinking = screen.thinking
        if drained.reasoning:
            await turn.widget.add_reasoning(drained.reasoning, drained.reasoning_started_at)
        if drained.answer:
            await turn.widget.add_answer(drained.answer, drained.answer_started_at)
        if screen.thinking != thinking:  # the footer's "answer now" comes or goes now
            screen.refresh_bindings()
        log = screen.log_view
        following = log.is_anchored and log.max_scroll_y - log.scroll_y <= 2
        turn.widget.tick(log.region.y, following=following)
        if drained.first_token_at is not None:
            thinking = drained.answer_started_at is None and \
                drained.reasoning_started_at is not None
            used = (turn.base_context or 0) + drained.tokens if turn.base_context else None
            screen.status.show(StatusFacts(
                "thinking" if thinking else "generating",
                tokens_per_second=drained.tokens_per_second(),
                ttft_seconds=drained.first_token_at - turn.buffer.started_at,
                context_used=used, context_limit=self.context_limit(),
                generated=drained.tokens))
        return drained

    async def _finish(self, turn: ActiveTurn) -> None:
        outcome = turn.outcome
        stored: Message | None = None
        stats = outcome.stats if isinstance(outcome, TurnEnded) else None
        if isinstance(outcome, TurnEnded) and outcome.saved is not None:
            if turn.user_widget is not None:
                turn.user_widget.message_id = outcome.saved.user_message_id
            stored = self.screen.conversations.message(outcome.saved.assistant_message_id)
        sys.setswitchinterval(turn.switch_interval)
        if isinstance(outcome, TurnFailed):
            turn.widget.error = outcome.error
        await turn.widget.finish(stats, stored)
        self._release()
        if isinstance(outcome, TurnFailed):
            remember_turn_error(self.screen.app.store, turn.conversation_id, turn.started_at,
                                outcome.error)
            await self.screen.turn_failed(turn, outcome.error)
            return
        if stats is not None:
            self.context_used = stats.prompt_tokens + stats.completion_tokens
        if stored is not None:
            self._number_versions(turn, stored)
        self.screen.refresh_conversation()
        self.show_idle_status(stats)

    def _number_versions(self, turn: ActiveTurn, stored: Message) -> None:
        """A regenerated answer or an edited prompt has siblings now: say which it is."""
        versions = self.screen.versions
        turn.widget.set_versions(versions(stored))
        if turn.user_widget is not None and turn.user_widget.message_id is not None:
            user = self.screen.conversations.message(turn.user_widget.message_id)
            if user is not None:
                turn.user_widget.set_versions(versions(user))

    def _release(self) -> None:
        """No turn in flight any more: the prompt blinks again, the bindings follow."""
        if self.active is not None:
            self.screen.prompt.cursor_blink = self.active.cursor_blink
        self.active = None
        self.screen.refresh_bindings()
