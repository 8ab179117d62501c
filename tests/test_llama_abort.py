"""A GGML abort prints one line (after the TUI put the terminal back), not a silent SIGABRT.

Each case runs in a child process, since the abort kills it: real llama.cpp loading a GGUF whose
block_count our header check would refuse (the check is bypassed on purpose), and a real
Textual app under a pseudo-terminal that hits a GGML abort while it runs.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from localr1.engine.ggml_abort import abort_line
from localr1.tui.terminal_driver import RESTORE_SEQUENCES
from tests.fixtures.odd_models import write_tiny_model

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGABRT and ptys are POSIX")

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)

_LOAD_BYPASSING_THE_CHECK = """
import sys, llama_cpp
from localr1.engine import ggml_abort
if sys.argv[2] == "hooked":
    ggml_abort.install()
llama_cpp.Llama(model_path=sys.argv[1], n_ctx=32, verbose=False)
print("loaded")
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONFAULTHANDLER",
                                                             "LOCALR1_DEBUG")}
    env["PYTHONPATH"] = _PROJECT_ROOT
    return env


def test_abort_during_load_prints_one_line(tmp_path):
    path = write_tiny_model(tmp_path / "zero-layers.gguf", metadata={"block_count": 0})
    result = subprocess.run([sys.executable, "-c", _LOAD_BYPASSING_THE_CHECK, str(path),
                             "hooked"], capture_output=True, text=True, env=_child_env(),
                            timeout=120)
    assert result.returncode == -signal.SIGABRT
    assert result.stdout == ""
    # fd 2 was /dev/null while llama-cpp-python loaded (verbose=False): the line still shows.
    [line] = result.stderr.splitlines()
    assert line.startswith("localr1: llama.cpp aborted: llama-model.cpp:"), line
    assert line.endswith(": GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= "
                         "LLAMA_MAX_LAYERS) failed"), line


def test_without_the_hook_the_same_file_dies_silently(tmp_path):
    """The failure the hook is for: exit 134 and, with verbose=False, not a word."""
    path = write_tiny_model(tmp_path / "zero-layers.gguf", metadata={"block_count": 0})
    result = subprocess.run([sys.executable, "-c", _LOAD_BYPASSING_THE_CHECK, str(path),
                             "plain"], capture_output=True, text=True, env=_child_env(),
                            timeout=120)
    assert result.returncode == -signal.SIGABRT
    assert "localr1:" not in result.stderr and "GGML_ASSERT" not in result.stderr


def test_abort_line_keeps_the_file_name_and_one_line():
    assert abort_line("/build/vendor/llama.cpp/src/llama-vocab.cpp:3422: GGML_ASSERT(x)\nfailed") \
        == "localr1: llama.cpp aborted: llama-vocab.cpp:3422: GGML_ASSERT(x) failed"
    assert abort_line("no location") == "localr1: llama.cpp aborted: no location"


_TUI_THAT_ABORTS = """
from textual.app import App
from textual.widgets import Static
from localr1.engine import ggml_abort
from localr1.tui.terminal_driver import terminal_driver_class

class Aborting(App):
    def compose(self):
        yield Static("running")

    def on_mount(self):
        ggml_abort.install()
        self.call_after_refresh(self.boom)  # once the app has drawn in application mode

    def boom(self):
        ggml_abort.ggml_function("ggml_abort")(b"/src/ggml.c", 7, b"%s", b"test abort")

Aborting(driver_class=terminal_driver_class()).run()
"""


def test_abort_while_the_tui_runs_restores_the_terminal_first():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    cooked = termios.tcgetattr(slave)
    env = _child_env() | {"TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-c", _TUI_THAT_ABORTS], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    try:
        output = _read_until_closed_or_exit(master, proc)
        assert proc.wait(timeout=60) == -signal.SIGABRT
        # The hook put back the termios modes Textual had changed (echo, line editing).
        assert termios.tcgetattr(slave)[3] == cooked[3]
    finally:
        os.close(slave)
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    entered = output.index(b"\x1b[?1049h")  # the app took the alternate screen
    restored = output.index(RESTORE_SEQUENCES.encode(), entered)
    line = output.index(b"localr1: llama.cpp aborted: ggml.c:7: test abort", restored)
    assert b"\x1b[?1000l" in RESTORE_SEQUENCES.encode() and b"\x1b[?25h" in output[restored:line]
    assert output[line:].count(b"localr1:") == 1


def _read_until_closed_or_exit(master: int, proc: subprocess.Popen) -> bytes:
    """All the child wrote to the pty, read while it runs (a full pty would block it).

    The parent keeps the slave open (to read its modes afterwards), so no EOF comes: reading
    stops once the child has exited and the pty is drained.
    """
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            chunks.append(os.read(master, 65536))
        elif proc.poll() is not None:
            return b"".join(chunks)
    raise AssertionError(f"the TUI child did not exit; it wrote {b''.join(chunks)[-500:]!r}")
