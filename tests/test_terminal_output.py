"""No escape sequence from data reaches a terminal: every command run on a real pty, with a
model whose file name, registered name, GGUF general.name and general.architecture, and a
conversation whose title and model, hold OSC 52 (clipboard), OSC 0 (title), ESC c (reset) and
C1 CSI/OSC."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import gguf
import numpy as np
import pytest

from localr1.cli.pull_progress import PullProgressPrinter
from localr1.models.pull_events import FileDone, FileStarted, Notice
from localr1.terminal_text import visible_controls
from tests.pty_terminal import localr1_on_terminal

EVIL = "\x1b]52;c;cHduZWQ=\x07\x1bc\x9b2J\x9d0;pwned\x07\x7f"
# `import --name` refuses it now (library.check_model_name); a registry written by an older
# version, or by hand, may still hold it.
EVIL_NAME = "evil\x1b]0;title\x07\x9b31m"

# Our own styling on a terminal: SGR (bold, dim) and the progress line's "\r ESC [K".
_OWN_CODES = re.compile(r"\x1b\[[0-9;]*m|\x1b\[K")


def assert_no_live_escapes(screen: bytes) -> None:
    text = _OWN_CODES.sub("", screen.decode("utf-8", "surrogateescape"))
    for bad in ("\x1b", "\x9b", "\x9d", "\udc9b", "\udc9d"):  # ESC, C1 CSI and OSC, raw bytes
        assert bad not in text, (bad, text)


def write_evil_model(directory: Path) -> Path:
    path = directory / f"model{EVIL}.gguf"
    writer = gguf.GGUFWriter(str(path), arch="qwen2" + EVIL)
    writer.add_name("name" + EVIL)
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def evil_home(tmp_path: Path) -> dict[str, str]:
    from localr1.paths import app_paths
    from localr1.store import Store

    env = os.environ.copy()
    env["HOME"] = str(tmp_path)  # `import --scan` looks here
    from localr1.models.library import build_model
    from localr1.models.registry import ModelRegistry

    model = write_evil_model(tmp_path)
    ModelRegistry.default().put(build_model(EVIL_NAME, (model,), source="import", owned=False))
    config = app_paths().config_file
    config.write_text(f"default_model = {json.dumps(EVIL_NAME)}\n")  # JSON escapes are TOML's
    with Store.open(app_paths().db_path) as store:
        conversation = store.create_conversation(model=EVIL_NAME, title="title" + EVIL,
                                                 system_prompt="system" + EVIL)
        store.add_message(conversation.id, "user", "question" + EVIL)
        store.add_message(conversation.id, "assistant", "answer" + EVIL,
                          reasoning="thought" + EVIL)
    return env


COMMANDS = [
    ("list",),
    ("show", EVIL_NAME),
    ("show", "--json", EVIL_NAME),
    ("show", EVIL_NAME + "x"),  # "did you mean" error naming the model
    ("rm", EVIL_NAME),  # the confirmation question names the model and its path
    ("run", "-m", EVIL_NAME, "hi"),  # the load error names the architecture
    ("run", "--temperature", EVIL, "hi"),  # a usage error quoting the value
    ("doctor",),
    ("doctor", "-m", EVIL_NAME),
    ("config", "show"),
    ("history", "list"),
    ("history", "show", "--reasoning", "1"),
    ("history", "show", "--json", "--reasoning", "1"),
    ("history", "show", "--markdown", "1"),
    ("history", "search", "answer"),
    ("history", "export", "1"),
    ("history", "rm", "1"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: visible_controls(" ".join(args))[:40])
def test_no_command_sends_escapes_from_data_to_a_terminal(evil_home, args):
    code, screen = localr1_on_terminal(*args, env=evil_home)
    assert code in (0, 1, 2), screen
    assert b"Traceback" not in screen
    assert_no_live_escapes(screen)
    assert b"\\x1b" in screen or b"\\x9b" in screen or b"\\u001b" in screen, screen  # shown


def test_import_and_did_you_mean_on_a_terminal(evil_home, tmp_path):
    second = tmp_path / "second"
    second.mkdir()
    code, screen = localr1_on_terminal("import", write_evil_model(second), "--name",
                                       EVIL_NAME + "2", env=evil_home)
    assert code == 1 and b"cannot be a model name" in screen, screen  # refused, shown
    assert_no_live_escapes(screen)
    code, screen = localr1_on_terminal("run", "-m", EVIL_NAME[:-2], "hi", env=evil_home)
    assert code == 1 and b"did you mean" in screen, screen
    assert_no_live_escapes(screen)


def test_batch_records_on_a_terminal_show_controls(evil_home, tmp_path, r1_prefill_model):
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"id": "id" + EVIL, "prompt": "hi"}) + "\n")
    code, screen = localr1_on_terminal("batch", "-m", r1_prefill_model, records,
                                       env=evil_home)
    assert code == 0, screen
    assert_no_live_escapes(screen)
    assert b'"answer": "Hello!' in screen


def test_pull_progress_shows_hub_file_names_escaped():
    stream = io.StringIO()
    printer = PullProgressPrinter(stream, is_tty=True, clock=lambda: 0.0, width=lambda: 200)
    name = "model" + EVIL + ".gguf"
    printer(FileStarted(filename=name, index=1, count=1, total_bytes=10, done_bytes=0,
                        action="download"))
    printer(Notice(f"retrying {name}"))
    printer(FileDone(filename=name, how="verified"))
    assert_no_live_escapes(stream.getvalue().encode())
    assert "\\x1b]52" in stream.getvalue()
