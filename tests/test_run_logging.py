"""`localr1 run` logs every turn to the store, like `llm`; -c/--cid continue; kill -9 is safe."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.fixtures.scripted_models import build_scripted_model


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=120)


def open_store() -> Store:
    return Store.open(app_paths().db_path)


def test_run_logs_the_turn_with_reasoning_and_numbers(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--json", "hi there")
    assert result.returncode == 0, result.stderr
    cid = json.loads(result.stdout)["conversation_id"]
    store = open_store()
    conversation = store.conversation(cid)
    assert conversation.title == "hi there"
    user, answer = store.branch(cid)
    assert (user.role, user.content) == ("user", "hi there")
    assert answer.content == sm.ANSWER_TEXT and answer.reasoning == sm.REASONING_TEXT
    assert answer.finish_reason == "stop"
    assert answer.completion_tokens > answer.reasoning_tokens > 0
    assert answer.tokens_per_second > 0 and answer.ttft_ms > 0


def test_no_log_saves_nothing(r1_prefill_model):
    assert localr1("run", "-m", r1_prefill_model, "--no-log", "hi").returncode == 0
    assert not app_paths().db_path.exists() or open_store().list_conversations() == []


def test_continue_sends_the_history_without_reasoning(r1_prefill_model):
    first = json.loads(localr1("run", "-m", r1_prefill_model, "--json", "hi").stdout)
    second = json.loads(localr1("run", "-c", "--json", "and again").stdout)  # model remembered
    assert second["conversation_id"] == first["conversation_id"]
    # The earlier answer (not its reasoning) is part of the new prompt.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + 8
    third = json.loads(localr1("run", "--cid", first["conversation_id"], "--json",
                               "third").stdout)
    assert third["conversation_id"] == first["conversation_id"]
    messages = open_store().branch(first["conversation_id"])
    assert [m.role for m in messages] == ["user", "assistant"] * 3


def test_continue_errors(r1_prefill_model):
    nothing = localr1("run", "-c", "hi")
    assert nothing.returncode == 1 and "no conversation to continue" in nothing.stderr
    missing = localr1("run", "--cid", "42", "-m", r1_prefill_model, "hi")
    assert missing.returncode == 1 and "no conversation 42" in missing.stderr
    assert localr1("run", "-c", "--no-log", "hi").returncode == 2


@pytest.fixture(scope="module")
def long_loop_model(tmp_path_factory):
    """The loop model with an 8k context: it streams for half a minute unless stopped."""
    path = tmp_path_factory.mktemp("long-loop") / "loop-8k.gguf"
    return build_scripted_model(path, "loop", context_length=8192)


def test_kill_9_mid_answer_keeps_the_partial_answer(long_loop_model):
    process = subprocess.Popen(
        [sys.executable, "-m", "localr1", "run", "-m", str(long_loop_model), "--threads", "1",
         "count forever"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    db = app_paths().db_path
    deadline = time.monotonic() + 60
    partial = ""
    while time.monotonic() < deadline and len(partial) < 40:
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db) as connection:
                    row = connection.execute(
                        "SELECT reasoning FROM messages WHERE role = 'assistant'").fetchone()
            except sqlite3.OperationalError:  # the schema is still being created
                continue
            partial = (row[0] or "") if row else ""
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(partial) >= 40, "nothing was flushed while streaming"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = open_store()
    user, answer = store.branch(store.latest_conversation_id())
    assert user.content == "count forever"
    assert answer.finish_reason == "incomplete"
    assert answer.reasoning.startswith(sm.LOOP_CYCLE_TEXT.strip())
    shown = localr1("history", "show", store.latest_conversation_id())
    assert "interrupted" in shown.stdout
