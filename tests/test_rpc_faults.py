"""RPC worker faults in `run` and `batch`: one line naming the worker, exit 1, within seconds.

A worker that is down at start is found by rpc_backend's probe before llama.cpp connects (it
would abort). A worker killed mid-answer makes llama.cpp's RPC client abort; ggml_abort's hook
names the worker that no longer takes connections and exits 1 (no SIGABRT, no C text), after
the answer is flushed: the history holds it up to the last token printed.

Real parts only: two `localr1 worker` subprocesses on free loopback ports, clients as
subprocesses (registering RPC devices is process-wide, so never in pytest's process), the
scripted looping model, real SQLite. Workers are waited for by probing them, never by sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localr1.engine import ggml_abort
from tests.conftest import requires_rpc
from tests.fixtures import scripted_models as sm
from tests.rpc_workers import (
    Worker,
    assistant_rows,
    batch_with_a_fault,
    free_port,
    localr1_args,
    localr1_process,
    lost_line,
    rpc_options,
    short_and_long_prompts,
    single_line,
    wait_until,
)

pytestmark = requires_rpc

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
KILL_TO_LINE_LIMIT = 10.0  # issue #16: the one-line error within 10 s of a worker's death


# ---- helpers -------------------------------------------------------------------------------


def localr1(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(localr1_args(*args), input="", capture_output=True, text=True,
                          env=os.environ.copy(), timeout=timeout)


# ---- a worker killed mid-answer ------------------------------------------------------------


@pytest.mark.parametrize("reasoning", ["hidden", "shown"])
def test_run_with_a_worker_killed_mid_answer_says_which_and_keeps_the_answer(
        reasoning, workers, long_loop_model, tmp_path):
    first, second = workers
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    hide = ["--hide-reasoning"] if reasoning == "hidden" else []
    with localr1_process("run", "-m", long_loop_model,
                         *rpc_options(first.endpoint, second.endpoint), "--ctx", 8192,
                         "--max-tokens", 8000, *hide, "think on", stdout=out,
                         stderr=err) as client:
        # Streaming, and the first flush (at least once a second) has reached the database.
        [(message_id, conversation_id, _, streamed, _)] = wait_until(
            lambda: [row for row in assistant_rows() if len(row[3] or "") > 100],
            "the answer to stream", timeout=180, poll=client)
        first.kill()  # SIGKILL: the worker holding the model's layer
        killed_at = time.monotonic()
        returncode = client.wait(timeout=60)
        took = time.monotonic() - killed_at
    assert returncode == 1, err.read_text()[-2000:]
    assert took < KILL_TO_LINE_LIMIT, took
    line = "localr1: " + lost_line(first.endpoint)
    if reasoning == "hidden":
        assert single_line(err) == line
    else:  # the line starts a line of its own after the streamed reasoning
        printed = err.read_text()
        assert printed.endswith("\n" + line + "\n")
        printed = printed.removesuffix(line + "\n")
        assert (sm.LOOP_CYCLE_TEXT * 100).startswith(printed.rstrip("\n"))
    assert out.read_text() == ""  # nothing leaked to stdout either (no C abort text anywhere)

    # The answer so far is kept, marked as cut off.
    shown = localr1("history", "show", conversation_id, "--json", "--reasoning")
    assert shown.returncode == 0, shown.stderr
    [answer] = [m for m in json.loads(shown.stdout)["messages"] if m["id"] == message_id]
    assert answer["finish_reason"] == "incomplete"
    assert answer["reasoning"].startswith(streamed)
    assert (sm.LOOP_CYCLE_TEXT * 100).startswith(answer["reasoning"].lstrip())
    if reasoning == "shown":  # flushed as the process ended: up to the last token printed
        assert printed in (answer["reasoning"], answer["reasoning"] + "\n")

    # The other worker goes on serving once its client is gone.
    wait_until(second.answers, "the surviving worker to answer again", timeout=60)


def test_batch_with_a_worker_killed_mid_batch_says_which_and_keeps_finished_records(
        workers, long_loop_model, tmp_path):
    first = workers[0]
    # SIGKILL while the second record decodes
    batch = batch_with_a_fault(workers, long_loop_model, tmp_path, Worker.kill, 1500)
    assert batch.returncode == 1, batch.stderr.read_text()
    assert batch.took < KILL_TO_LINE_LIMIT, batch.took
    assert single_line(batch.stderr) == "localr1: " + lost_line(first.endpoint)
    # The finished record is kept (a rerun resumes after it); the one in flight is not written.
    [record] = [json.loads(line) for line in batch.records.read_text().splitlines()]
    assert record["id"] == "short"


def test_batch_on_a_terminal_clears_its_progress_line_before_the_fault_line(
        workers, long_loop_model, tmp_path):
    from tests.pty_terminal import run_on_terminal

    first, second = workers
    prompts = short_and_long_prompts(tmp_path)
    records = tmp_path / "records.jsonl"
    stop_waiting = threading.Event()

    def kill_the_first_worker_after_the_first_record() -> None:
        while not stop_waiting.is_set():
            if records.exists() and '"short"' in records.read_text():
                first.kill()  # the progress line is on the terminal by now
                return
            stop_waiting.wait(0.05)

    killer = threading.Thread(target=kill_the_first_worker_after_the_first_record)
    killer.start()
    try:
        code, output = run_on_terminal(
            localr1_args("batch", prompts, "-o", records, "-m", long_loop_model,
                         *rpc_options(first.endpoint, second.endpoint), "--max-tokens", 1500),
            env=os.environ.copy(), timeout=240)
    finally:
        stop_waiting.set()
        killer.join()
    text = output.decode("utf-8", "replace")
    assert code == 1, text[-2000:]
    line = "localr1: " + lost_line(first.endpoint)
    assert "tokens/s" in text  # the progress line was shown
    assert text.endswith("\r\x1b[K" + line + "\r\n"), text[-300:]


# ---- a worker down at start ----------------------------------------------------------------


@pytest.fixture()
def one_worker(tmp_path: Path) -> Iterator[Worker]:
    worker = Worker(tmp_path)
    try:
        yield worker
    finally:
        worker.kill()


@pytest.mark.parametrize("command", ["run", "batch"])
def test_a_worker_down_at_start_is_one_line_and_exit_1(command, one_worker, r1_prefill_model,
                                                       tmp_path):
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    prompt = ["hi"] if command == "run" else [tmp_path / "prompts.txt"]
    (tmp_path / "prompts.txt").write_text("hi\n")
    started = time.monotonic()
    result = localr1(command, "-m", r1_prefill_model, *rpc_options(one_worker.endpoint, down),
                     *prompt, timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert down in line and "connection refused" in line and one_worker.endpoint not in line
    assert took < 30, took  # Python's start-up and the model's header; no waiting on the worker
    assert assistant_rows() == []
    # The live worker was probed and let go: it still answers.
    assert one_worker.answers()


# ---- the abort hook's parts ----------------------------------------------------------------


def test_an_rpc_abort_is_told_from_other_aborts():
    assert ggml_abort.is_rpc_fault("/build/ggml/src/ggml-rpc/ggml-rpc.cpp:566: Remote RPC server "
                                   "crashed or returned malformed response")
    assert ggml_abort.is_rpc_fault("C:\\b\\ggml-rpc.cpp:547: Failed to connect to h:1\n")
    assert not ggml_abort.is_rpc_fault("/build/src/llama-model.cpp:1328: GGML_ASSERT(x) failed")
    assert not ggml_abort.is_rpc_fault("no location at all")


def test_unreachable_workers_are_the_ones_refusing_connections():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        dead = f"127.0.0.1:{free_port()}"
        started = time.monotonic()
        assert ggml_abort.unreachable_workers((alive, dead)) == [(dead, "connection refused")]
        assert time.monotonic() - started < 2 * ggml_abort.WORKER_PROBE_TIMEOUT + 1


def test_a_worker_still_closing_its_port_is_asked_again():
    """A killed worker's connection can close just before its listening socket does."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(1)
    endpoint = f"127.0.0.1:{listening.getsockname()[1]}"

    def close_after_the_first_connection() -> None:
        connection, _ = listening.accept()
        connection.close()
        listening.close()

    closer = threading.Thread(target=close_after_the_first_connection)
    closer.start()
    try:
        assert ggml_abort.lost_workers((endpoint,)) == [(endpoint, "connection refused")]
    finally:
        closer.join(timeout=10)
        listening.close()


def test_the_fault_line_names_the_lost_workers_or_says_what_broke():
    message = "/b/ggml-rpc.cpp:566: Remote RPC server crashed or returned malformed response"
    workers = ("10.0.0.2:50052", "10.0.0.3:50052")
    lost = [("10.0.0.3:50052", "No route to host")]
    assert ggml_abort.worker_fault_line(message, workers, lost) == \
        "localr1: RPC worker 10.0.0.3:50052 stopped answering (No route to host)"
    assert ggml_abort.worker_fault_line(message, workers, [(w, "connection refused")
                                                           for w in workers]) == (
        "localr1: RPC workers 10.0.0.2:50052 (connection refused), 10.0.0.3:50052 "
        "(connection refused) stopped answering")
    assert ggml_abort.worker_fault_line(message, workers, []) == (
        "localr1: lost the connection to RPC worker 10.0.0.2:50052 or 10.0.0.3:50052: "
        "ggml-rpc.cpp:566: Remote RPC server crashed or returned malformed response")


def test_a_worker_too_busy_to_accept_is_not_lost():
    """A live worker serving this process never accepts another connection (llama.cpp's server
    takes one client at a time, backlog 1): a connect that times out must not name it."""
    with socket.socket() as listening, contextlib.ExitStack() as queued:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        address = listening.getsockname()
        while True:  # fill the accept queue that nobody takes from, as a busy server's is
            client = queued.enter_context(socket.socket())
            client.settimeout(0.5)
            try:
                client.connect(address)
            except TimeoutError:
                break
        busy = f"127.0.0.1:{address[1]}"
        started = time.monotonic()
        assert ggml_abort.unreachable_workers((busy,)) == []
        assert time.monotonic() - started < ggml_abort.WORKER_PROBE_TIMEOUT + 1.5


_ABORT_FROM_THE_RPC_CLIENT = """
import sys
from localr1.engine import ggml_abort
ggml_abort.watch_workers(sys.argv[1:])
ggml_abort.ggml_function("ggml_abort")(
    b"/build/ggml/src/ggml-rpc/ggml-rpc.cpp", 566, b"%s",
    b"Remote RPC server crashed or returned malformed response")
"""


def test_an_rpc_abort_exits_1_with_the_line_instead_of_sigabrt():
    """llama.cpp's own ggml_abort, called as ggml-rpc.cpp calls it (a child: it ends there)."""
    dead = f"127.0.0.1:{free_port()}"
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-c", _ABORT_FROM_THE_RPC_CLIENT, alive, dead],
                                capture_output=True, text=True, timeout=60,
                                env=os.environ | {"PYTHONPATH": _PROJECT_ROOT})
    assert result.returncode == 1, result.stderr
    assert result.returncode != -signal.SIGABRT
    assert result.stdout == ""
    assert result.stderr == f"localr1: RPC worker {dead} stopped answering (connection refused)\n"


_TWO_ABORTS_AT_ONCE = """
import sys, threading
from localr1.engine import ggml_abort
ggml_abort.watch_workers(sys.argv[1:])
# Both threads would meet in the hook if both got in; with the lock the first waits for a
# second that never comes, and goes on after the timeout.
both_in_the_hook = threading.Barrier(2, timeout=2)
def hook():
    print("in the hook", file=sys.stderr, flush=True)
    both_in_the_hook.wait()
ggml_abort.set_before_abort(hook)
abort = ggml_abort.ggml_function("ggml_abort")
def fail():  # ctypes lets the GIL go while C runs
    abort(b"/build/ggml/src/ggml-rpc/ggml-rpc.cpp", 566, b"%s", b"Remote RPC server crashed")
threads = [threading.Thread(target=fail) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_two_threads_aborting_at_once_print_one_line():
    with socket.socket() as listening:  # alive: the hook asks it again for a while
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-c", _TWO_ABORTS_AT_ONCE, alive],
                                capture_output=True, text=True, timeout=60,
                                env=os.environ | {"PYTHONPATH": _PROJECT_ROOT})
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr == (f"in the hook\nlocalr1: lost the connection to RPC worker "
                             f"{alive}: ggml-rpc.cpp:566: Remote RPC server crashed\n")
