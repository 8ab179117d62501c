"""Small things a new user tripped on (issue 13, item 10): the chat app's exit status after a
crash, the title of a run with piped text, and `doctor --model` without a default model."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.pty_terminal import run_on_terminal

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=120)


# A widget of the welcome screen (what `localr1 chat` shows with no model) that fails, then
# the console script, as `localr1 chat` runs it.
_CHAT_WITH_A_BROKEN_WIDGET = """
import sys
from localr1.tui.screens import welcome

def broken(self):
    raise RuntimeError("a widget broke")

welcome.WelcomeScreen.{method} = broken
sys.argv = ["localr1", "chat"]
from localr1.cli.main import main
main()
"""


def _in_terminal(code: str) -> tuple[int, str]:
    """Run Python `code` on a 100x30 pseudo-terminal, keyboard included; its exit status and
    what it wrote."""
    env = {k: v for k, v in os.environ.items() if k != "LOCALR1_DEBUG"}
    env |= {"TERM": "xterm-256color", "PYTHONPATH": _PROJECT_ROOT}
    status, screen = run_on_terminal([sys.executable, "-c", code], env=env, keyboard=True,
                                     size=(100, 30))
    return status, screen.decode("utf-8", "replace")


def _python_on_terminal(code: str) -> None:
    run_on_terminal([sys.executable, "-c", code], timeout=3)


@pytest.mark.skipif(os.name != "posix", reason="ptys are POSIX")
def test_a_terminal_that_never_closes_fails_the_test_at_its_deadline():
    with pytest.raises(pytest.fail.Exception, match="did not exit; its last output:\nwaiting"):
        _python_on_terminal("import sys, threading; print('waiting'); sys.stdout.flush(); "
                            "threading.Event().wait()")


@pytest.mark.skipif(os.name != "posix", reason="ptys are POSIX")
def test_a_command_that_closes_the_terminal_but_hangs_fails_at_the_deadline():
    with pytest.raises(pytest.fail.Exception, match="closed the terminal but did not exit"):
        _python_on_terminal("import os, threading; print('bye', flush=True); os.close(1); "
                            "os.close(2); threading.Event().wait()")


@pytest.mark.skipif(sys.platform != "linux", reason="pidfds are Linux's")
def test_the_deadline_kills_a_grandchild_that_holds_the_terminal():
    spawn = ("import subprocess, sys; child = subprocess.Popen([sys.executable, '-c', "
             "'import threading; threading.Event().wait()']); print('pid', child.pid)")
    with pytest.raises(pytest.fail.Exception) as failure:
        _python_on_terminal(spawn)  # it exits at once; its child keeps the terminal open
    grandchild = int(re.search(r"pid (\d+)", str(failure.value)).group(1))
    try:
        pidfd = os.pidfd_open(grandchild)
    except ProcessLookupError:
        return  # gone and reaped already
    try:
        assert select.select([pidfd], [], [], 30)[0], "the grandchild outlived the test"
    finally:
        os.close(pidfd)


@pytest.mark.skipif(os.name != "posix", reason="ptys are POSIX")
def test_the_chat_app_exits_non_zero_after_a_crash():
    code, screen = _in_terminal(_CHAT_WITH_A_BROKEN_WIDGET.format(method="_describe_default"))
    assert "a widget broke" in screen  # Textual's report of the crash
    assert code == 1


def test_piped_text_and_an_argument_title_the_conversation_by_the_argument(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "summarize this",
                     input="diff --git a/file.py b/file.py\n+print('hi')\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == sm.ANSWER_TEXT + "\n"
    only_piped = localr1("run", "-m", r1_prefill_model, input="first line of the file\nmore\n")
    assert only_piped.returncode == 0, only_piped.stderr
    with Store.open() as store:
        first, second = sorted(store.list_conversations(), key=lambda c: c.id)
        assert first.title == "summarize this"
        [user, _answer] = store.branch(first.id)
        assert user.content.startswith("diff --git") and user.content.endswith("summarize this")
        assert second.title == "first line of the file"


def test_doctor_with_a_model_does_not_warn_about_the_default(r1_prefill_model):
    result = localr1("doctor", "--model", r1_prefill_model)
    assert result.returncode == 0, result.stdout
    [line] = [line for line in result.stdout.splitlines() if "default model" in line]
    assert line.startswith("ok ") and line.endswith("none set (--model given)")
    [plain] = [line for line in localr1("doctor").stdout.splitlines() if "default model" in line]
    assert plain.startswith("WARN") and plain.endswith("none set")
