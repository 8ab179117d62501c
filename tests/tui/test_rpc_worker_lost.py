"""The app outlives a lost RPC worker (issue #16, point 4): its model is in a child process
(engine/model_process), so a worker killed mid-answer fails the turn with the line `run`
prints, the partial answer stays saved like any interrupted turn, and the next turn loads the
model on the workers again once the worker is back.

The real app driven by Textual's pilot, its model in a spawned child (registering RPC devices
never happens in pytest's process), `localr1 worker` subprocesses on loopback, real SQLite.
"""

from __future__ import annotations

import os
import signal
import time

from localr1.config import Settings
from tests.conftest import requires_rpc
from tests.fixtures import scripted_models as sm
from tests.rpc_workers import Worker, lost_line
from tests.tui.conftest import SIZE, wait_for, wait_ready

pytestmark = requires_rpc

KILL_TO_ERROR_LIMIT = 10.0  # as for `run`: the fault is told within seconds


def answer_text(app) -> str:
    answer = app.chat.log_view.last_answer()
    return "" if answer is None else str(answer.footer.render())


def saved_reasoning(store, app) -> str:
    """The streaming answer's reasoning as saved so far (flushed at least once a second)."""
    conversation = app.chat.conversation
    if conversation is None:
        return ""
    last = store.branch(conversation.id)[-1]
    return (last.reasoning or "") if last.role == "assistant" else ""


async def think_on(pilot, store, at_least: int) -> None:
    """Send "think on" and wait until that much reasoning is saved (the loop model thinks on)."""
    app = pilot.app
    app.chat.prompt.focus()
    app.chat.prompt.text = "think on"
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(saved_reasoning(store, app)) > at_least, timeout=180,
                   what="reasoning to stream")


async def test_the_app_keeps_the_partial_answer_and_stays_up_when_a_worker_dies(
        make_app, store, workers, long_loop_model, tmp_path):
    first, second = workers
    settings = Settings(gpu_layers=-1, threads=1, rpc=(first.endpoint, second.endpoint),
                        context_size=4096)
    app = make_app(model_path=long_loop_model, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        assert app.model_state == "ready", [str(n.message) for n in app._notifications]
        # The header says where the layers went.
        assert f"RPC {first.endpoint}" in app.engine.info.placement
        chat = app.chat
        await think_on(pilot, store, at_least=200)
        first.kill()
        await wait_for(pilot, lambda: chat.turn is None, timeout=KILL_TO_ERROR_LIMIT,
                       what="the turn to fail")
        await wait_for(pilot, lambda: lost_line(first.endpoint) in answer_text(app),
                       what="the reason under the answer")
        assert any(lost_line(first.endpoint) in str(note.message) for note in app._notifications)
        assert app.is_running

        # The partial answer is kept like any interrupted turn.
        conversation_id = chat.conversation.id
        saved = store.branch(conversation_id)[-1]
        assert saved.role == "assistant" and saved.finish_reason == "error"
        assert len(saved.reasoning) > 200
        assert (sm.LOOP_CYCLE_TEXT * 200).startswith(saved.reasoning.lstrip())

        # The worker back: the next turn loads the model on it again and streams.
        again = Worker(tmp_path, port=first.port)  # back after a restart
        try:
            chat.prompt.text = "again"
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(store.branch(conversation_id)) == 4 and
                           len(saved_reasoning(store, app)) > 50,
                           timeout=180, what="the model to answer again")
        finally:
            if chat.turn is not None:
                chat.turn.cancel.set()
                await wait_for(pilot, lambda: chat.turn is None, timeout=60,
                               what="the turn to stop")
            again.kill()
        assert store.branch(conversation_id)[-1].finish_reason == "cancelled"


async def test_a_stopped_worker_fails_the_turn_after_rpc_timeout_and_the_app_stays_up(
        make_app, store, workers, long_loop_model):
    """kill -STOP closes no connection: the model process's watchdog ends it after the
    configured silence, and the app says which worker."""
    first, second = workers
    settings = Settings(gpu_layers=-1, threads=1, rpc=(first.endpoint, second.endpoint),
                        context_size=4096, rpc_timeout=2)
    app = make_app(model_path=long_loop_model, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        chat = app.chat
        await think_on(pilot, store, at_least=100)
        os.kill(first.process.pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            await wait_for(pilot, lambda: chat.turn is None, timeout=60,
                           what="the turn to fail")
            took = time.monotonic() - stopped_at
            expected = f"RPC worker {first.endpoint} stopped answering (no reply for 2 s)"
            await wait_for(pilot, lambda: expected in answer_text(app),
                           what="the reason under the answer")
        finally:
            os.kill(first.process.pid, signal.SIGCONT)
        # The silence counts from the last reply, a token's time before the stop.
        assert 2 - 0.5 <= took < 2 + KILL_TO_ERROR_LIMIT, took
        assert app.is_running
        saved = store.branch(chat.conversation.id)[-1]
        assert saved.finish_reason == "error" and len(saved.reasoning) > 100
        await pilot.pause()
