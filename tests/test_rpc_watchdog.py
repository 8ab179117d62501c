"""RPC workers that stop answering without closing their connections (`kill -STOP` here, as a
power loss or a pulled cable would look from the client): rpc_watchdog ends `run` and `batch`
with one line naming the worker and exit 1 within the limit the test sets (rpc_timeout in
config.toml); a worker paused for less than the limit lets the answer finish; Ctrl+C ends a
hung `run` with exit 130, and cancels a slow decode still within its expected time. The rules
(the sockets' verdict, the time model, Ctrl+C) are also tested on numbers.

Real parts only: `localr1 worker` subprocesses on loopback, clients as subprocesses
(registering RPC devices is process-wide), the scripted looping model, real SQLite. Stopped
workers are continued and killed in `finally`. Waits are on state: the answer in the
database, output that stops growing while a worker is stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine import ggml_abort, rpc_watchdog
from localr1.engine.events import GenerationParams
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.rpc_watchdog import TcpState
from localr1.paths import app_paths
from tests.conftest import requires_rpc
from tests.fixtures import scripted_models as sm
from tests.rpc_workers import (
    Worker,
    assistant_rows,
    batch_with_a_fault,
    localr1_args,
    localr1_process,
    rpc_options,
    single_line,
    wait_until,
)

LIMIT = 2  # rpc_timeout for the tests that trip it, in seconds
TRIP_SLACK = 6.0  # the watchdog's tick, the check of the sockets, Python's exit


def _set_rpc_timeout(seconds: float) -> None:
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"rpc_timeout = {seconds}\n")


def _stop(worker: Worker) -> None:
    os.kill(worker.process.pid, signal.SIGSTOP)


def _streaming(client: subprocess.Popen) -> tuple[int, int, str, str | None, str | None]:
    """Wait for the answer to stream (its first flush is in the database)."""
    [row] = wait_until(lambda: [row for row in assistant_rows() if len(row[3] or "") > 100],
                       "the answer to stream", timeout=180, poll=client)
    return row


def _stalled(path: Path, client: subprocess.Popen, quiet: float = 1.0) -> None:
    """Wait until `path` (a client's streamed output) has not grown for `quiet` seconds."""
    size, since = path.stat().st_size, time.monotonic()

    def still() -> bool:
        nonlocal size, since
        now_size = path.stat().st_size
        if now_size != size:
            size, since = now_size, time.monotonic()
        return time.monotonic() - since >= quiet

    wait_until(still, "the output to stop growing", timeout=60, poll=client)


def _fault_line(endpoint: str) -> re.Pattern[str]:
    return re.compile(rf"localr1: RPC worker {re.escape(endpoint)} stopped answering "
                      r"\(no reply for \d+ s\)")


@requires_rpc
def test_run_with_a_stopped_worker_names_it_and_exits_1(workers, long_loop_model, tmp_path):
    _set_rpc_timeout(LIMIT)
    first, second = workers
    err = tmp_path / "stderr"
    with localr1_process("run", "-m", long_loop_model,
                         *rpc_options(first.endpoint, second.endpoint), "--ctx", 8192,
                         "--max-tokens", 8000, "think on", stderr=err) as client:
        message_id, conversation_id, _, _, _ = _streaming(client)
        _stop(first)  # the worker holding the model's layer: its connection stays open
        stopped_at = time.monotonic()
        returncode = client.wait(timeout=60)
        took = time.monotonic() - stopped_at
    assert returncode == 1, err.read_text()[-2000:]
    printed, line = err.read_text().rstrip("\n").rsplit("\n", 1)  # the line starts a line
    assert _fault_line(first.endpoint).fullmatch(line), err.read_text()[-500:]
    # Silence counts from the last data received, a moment before the stop; the warm-up is
    # not timed, so a slow load cannot stretch the limit past LIMIT.
    assert LIMIT - 0.5 <= took < LIMIT + TRIP_SLACK, took
    # The answer up to the last token printed is kept, marked as cut off.
    shown = subprocess.run(localr1_args("history", "show", conversation_id, "--json",
                                        "--reasoning"),
                           capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    [answer] = [m for m in json.loads(shown.stdout)["messages"] if m["id"] == message_id]
    assert answer["finish_reason"] == "incomplete"
    assert answer["reasoning"].rstrip("\n") == printed.rstrip("\n")
    assert (sm.LOOP_CYCLE_TEXT * 100).startswith(printed)


@requires_rpc
def test_batch_with_a_stopped_worker_names_it_and_exits_1(workers, long_loop_model, tmp_path):
    _set_rpc_timeout(LIMIT)
    first = workers[0]
    batch = batch_with_a_fault(workers, long_loop_model, tmp_path, _stop, 4000)
    assert batch.returncode == 1, batch.stderr.read_text()
    assert _fault_line(first.endpoint).fullmatch(single_line(batch.stderr)), \
        batch.stderr.read_text()
    assert LIMIT - 0.5 <= batch.took < LIMIT + TRIP_SLACK, batch.took
    [record] = [json.loads(line) for line in batch.records.read_text().splitlines()]
    assert record["id"] == "short"


@requires_rpc
def test_a_worker_paused_for_less_than_the_limit_lets_the_answer_finish(
        workers, long_loop_model, tmp_path):
    _set_rpc_timeout(20)
    first, second = workers
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with localr1_process("run", "-m", long_loop_model,
                         *rpc_options(first.endpoint, second.endpoint), "--ctx", 8192,
                         "--reasoning-budget", 600, "--max-tokens", 1200,
                         "think on", stdout=out, stderr=err) as client:
        _streaming(client)
        _stop(first)
        _stalled(err, client, quiet=2.0)  # the reasoning stopped streaming: the decode waits
        os.kill(first.process.pid, signal.SIGCONT)
        returncode = client.wait(timeout=180)
    assert returncode == 0, err.read_text()[-2000:]
    assert "stopped answering" not in err.read_text()
    assert out.read_text().strip()  # the answer after the reasoning budget


@requires_rpc
def test_ctrl_c_ends_a_run_hung_on_a_stopped_worker(workers, long_loop_model, tmp_path):
    _set_rpc_timeout(600)  # the watchdog would wait long: Ctrl+C must not
    first, second = workers
    err = tmp_path / "stderr"
    with localr1_process("run", "-m", long_loop_model,
                         *rpc_options(first.endpoint, second.endpoint), "--ctx", 8192,
                         "--max-tokens", 8000, "think on", stderr=err) as client:
        _streaming(client)
        _stop(first)
        _stalled(err, client)
        client.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        returncode = client.wait(timeout=30)
        took = time.monotonic() - interrupted_at
    assert returncode == 130, err.read_text()[-2000:]
    assert took < rpc_watchdog.INTERRUPT_GRACE + 3, took
    streamed, last_line = err.read_text().rstrip("\n").rsplit("\n", 1)
    assert last_line == "localr1: interrupted"
    assert (sm.LOOP_CYCLE_TEXT * 100).startswith(streamed)


# ---- the rule, on sockets' states ----------------------------------------------------------

WORKERS = ("10.0.0.2:50052", "10.0.0.3:50052")
IDLE = TcpState(last_sent=40.0, last_received=39.9, unacked=0, retransmits=0)  # answered


def test_a_decode_with_data_received_within_the_limit_goes_on():
    waiting = TcpState(last_sent=0.5, last_received=0.4, unacked=0, retransmits=0)
    states = {WORKERS[0]: [IDLE], WORKERS[1]: [waiting]}
    assert rpc_watchdog.stalled_worker(WORKERS, states, elapsed=40.0, limit=30.0) is None
    # A decode younger than the limit goes on whatever the sockets say.
    assert rpc_watchdog.stalled_worker(WORKERS, {}, elapsed=29.0, limit=30.0) is None


def test_the_worker_sent_a_request_and_silent_since_is_named():
    waiting = TcpState(last_sent=31.0, last_received=31.5, unacked=0, retransmits=0)
    states = {WORKERS[0]: [IDLE], WORKERS[1]: [waiting]}
    assert rpc_watchdog.stalled_worker(WORKERS, states, elapsed=31.0, limit=30.0) == \
        "localr1: RPC worker 10.0.0.3:50052 stopped answering (no reply for 31 s)"


def test_data_resent_without_acknowledgement_says_the_machine_is_gone():
    unacked = TcpState(last_sent=35.0, last_received=36.0, unacked=3, retransmits=5)
    states = {WORKERS[0]: [unacked], WORKERS[1]: [IDLE]}
    assert rpc_watchdog.stalled_worker(WORKERS, states, elapsed=35.0, limit=30.0) == (
        "localr1: RPC worker 10.0.0.2:50052 stopped answering (its machine does not "
        "acknowledge what was sent)")


def test_without_sockets_to_read_every_worker_is_named():
    assert rpc_watchdog.stalled_worker(WORKERS, {}, elapsed=31.0, limit=30.0) == (
        "localr1: RPC worker 10.0.0.2:50052 or 10.0.0.3:50052 stopped answering "
        "(no reply for 31 s)")


def test_the_local_compute_is_no_worker_s_silence():
    # Its last event was a reply: nothing waits on it, this machine computes.
    states = {"10.0.0.2:50052": [TcpState(41.0, 40.9, 0, 0)]}
    assert rpc_watchdog.stalled_worker(("10.0.0.2:50052",), states, elapsed=41.0,
                                       limit=30.0) is None
    assert rpc_watchdog.stalled_worker(WORKERS, {WORKERS[0]: [IDLE], WORKERS[1]: [IDLE]},
                                       elapsed=41.0, limit=30.0) is None
    # A worker whose socket was not found is judged by the time alone.
    assert rpc_watchdog.stalled_worker(WORKERS, {WORKERS[0]: [IDLE]}, elapsed=41.0,
                                       limit=30.0) == \
        "localr1: RPC worker 10.0.0.3:50052 stopped answering (no reply for 40 s)"


def _times(*decodes: tuple[int, float]) -> rpc_watchdog.DecodeTimes:
    times = rpc_watchdog.DecodeTimes()
    for n_tokens, seconds in decodes:
        times.record(n_tokens, seconds)
    return times


def test_the_limit_is_fixed_plus_per_token_cost_of_recent_decodes():
    assert _times().limit(512, 30.0) == 30.0  # nothing timed yet: the setting
    # Single tokens at 1 s, 512-token chunks at 10 ms a token.
    times = _times((1, 1.0), (1, 0.5), (512, 5.12))
    assert times.expected(1) == pytest.approx(1.0 + 0.01)
    assert times.limit(1, 30.0) == 30.0
    assert times.limit(512, 30.0) == 30.0  # 2 x (1 + 5.12)
    assert times.limit(4096, 30.0) == pytest.approx(2 * (1.0 + 0.01 * 4096))
    # Until a chunk is timed, the small decodes' seconds per token stand in (an upper bound).
    assert _times((1, 0.1), (8, 0.4)).limit(512, 30.0) == pytest.approx(2 * (0.4 + 0.1 * 512))


def test_one_slow_decode_does_not_stretch_the_limit_for_good():
    times = _times((512, 5.12), (1, 25.0))  # a 25 s hiccup on one token
    assert times.limit(512, 30.0) == pytest.approx(2 * (25.0 + 5.12))  # not 2 x 25 x 512
    for _ in range(rpc_watchdog.RECENT):
        times.record(1, 0.05)
    assert times.limit(512, 30.0) == 30.0  # 2 x (0.05 + 5.12): the hiccup is forgotten
    for _ in range(rpc_watchdog.RECENT):  # nor do single tokens push the chunks' cost out
        times.record(1, 0.05)
    assert times.expected(512) == pytest.approx(0.05 + 5.12)


def test_after_ctrl_c_only_a_decode_past_its_time_waiting_on_a_worker_hangs():
    waiting = TcpState(last_sent=3.0, last_received=3.5, unacked=0, retransmits=0)
    hangs = rpc_watchdog.hangs_after_interrupt
    assert not hangs(WORKERS, {WORKERS[0]: [waiting], WORKERS[1]: [IDLE]}, 3.0, expected=6.0)
    assert hangs(WORKERS, {WORKERS[0]: [waiting], WORKERS[1]: [IDLE]}, 7.0, expected=6.0)
    assert not hangs(WORKERS, {WORKERS[0]: [IDLE], WORKERS[1]: [IDLE]}, 7.0, expected=6.0)
    assert hangs(WORKERS, {}, 7.0, expected=6.0)  # no socket to read: the time alone
    assert not hangs(WORKERS, {}, 0.9, expected=0.0)  # within the grace


def test_a_worker_s_address_is_looked_up_once(monkeypatch):
    import socket

    lookups = []
    real = socket.getaddrinfo

    def counted(*args, **kwargs):
        lookups.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counted)
    monkeypatch.setattr(rpc_watchdog, "_resolved", {})
    for _ in range(3):
        assert rpc_watchdog.worker_sockets(("127.0.0.1:9",)) == {}
    assert lookups == ["127.0.0.1"]


def test_one_rpc_timeout_default(monkeypatch):
    from localr1.config import DEFAULT_RPC_TIMEOUT, Settings
    from localr1.engine.llama_engine import EngineConfig

    monkeypatch.setattr(rpc_watchdog, "_times", rpc_watchdog.DecodeTimes())
    assert Settings().rpc_timeout == EngineConfig(Path("m.gguf")).rpc_timeout == \
        rpc_watchdog.limit_for(1) == DEFAULT_RPC_TIMEOUT


# ---- what is timed -------------------------------------------------------------------------


@pytest.fixture()
def timed(monkeypatch) -> rpc_watchdog.DecodeTimes:
    """A pretend worker, so the decodes of this process are timed; the watchdog's thread is
    not started (it would take the pytest process's signal wakeup fd)."""
    times = rpc_watchdog.DecodeTimes()
    monkeypatch.setattr(ggml_abort, "_workers", ("10.0.0.2:50052",))
    monkeypatch.setattr(rpc_watchdog, "_start", lambda: None)
    monkeypatch.setattr(rpc_watchdog, "_times", times)
    return times


def test_the_warm_up_is_not_timed_and_a_turn_is(timed, r1_original_model):
    with Engine.load(EngineConfig(r1_original_model, context_size=1024, threads=1)) as engine:
        assert not timed  # the load's warm-up decode
        list(engine.stream_chat([ChatMessage("user", "hi")], GenerationParams(temperature=0)))
    assert timed.expected(1) > 0


def test_the_draft_model_is_not_watched(timed, monkeypatch, r1_original_model):
    callers = []
    real = rpc_watchdog.decoding

    def spy(n_tokens, **options):
        callers.append(sys._getframe(1).f_globals["__name__"])
        return real(n_tokens, **options)

    monkeypatch.setattr(rpc_watchdog, "decoding", spy)
    config = EngineConfig(r1_original_model, context_size=1024, threads=1,
                          draft=r1_original_model)
    with Engine.load(config) as engine:
        events = list(engine.stream_chat([ChatMessage("user", "hi")],
                                         GenerationParams(temperature=0)))
    assert events[-1].stats.draft_tokens > 0
    assert "localr1.engine.decode_loop" in callers
    assert "localr1.engine.drafters" not in callers  # under --rpc it runs on this CPU alone


# ---- Ctrl+C during a slow decode -----------------------------------------------------------

# A decode of 512 tokens that is about 4 s of C code with the GIL released, in a process with
# a pretend worker (no socket to read: the time rule alone); argv[1] is how long such decodes
# took before.
_SLOW_DECODE = """
import hashlib, sys, time
from localr1.engine import ggml_abort, rpc_watchdog

ggml_abort._workers = ("127.0.0.1:9",)
rpc_watchdog._times.record(512, float(sys.argv[1]))
started = time.monotonic()
hashlib.pbkdf2_hmac("sha256", b"p", b"s", 20000)
rounds = int(20000 * 4.0 / max(time.monotonic() - started, 0.001))
try:
    with rpc_watchdog.decoding(512):
        print("decoding", flush=True)
        hashlib.pbkdf2_hmac("sha256", b"p", b"s", rounds)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(3)
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _interrupt_slow_decode(tmp_path: Path, took_before: float) -> tuple[int, str, str, float]:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", _SLOW_DECODE, str(took_before)],
                                   stdout=stdout, stderr=stderr)
    try:
        wait_until(lambda: "decoding" in out.read_text(), "the decode", timeout=60,
                   poll=process)
        # In the C call once it has used CPU since (no other work runs in that process).
        cpu = _cpu_seconds(process.pid)
        wait_until(lambda: _cpu_seconds(process.pid) > cpu + 0.3, "the C call", timeout=60,
                   poll=process)
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        returncode = process.wait(timeout=120)
        took = time.monotonic() - interrupted_at
    finally:
        process.kill()
        process.wait()
    return returncode, out.read_text(), err.read_text(), took


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux's /proc")
def test_ctrl_c_cancels_a_slow_decode_within_its_expected_time(tmp_path):
    returncode, out, err, _ = _interrupt_slow_decode(tmp_path, took_before=60.0)
    assert returncode == 3, err
    assert out.splitlines() == ["decoding", "KeyboardInterrupt"]
    assert "localr1: interrupted" not in err


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux's /proc")
def test_ctrl_c_ends_a_decode_past_its_expected_time(tmp_path):
    returncode, out, err, took = _interrupt_slow_decode(tmp_path, took_before=0.5)
    assert returncode == 130, err
    assert err == "localr1: interrupted\n"
    assert out.splitlines() == ["decoding"]
    assert took < rpc_watchdog.INTERRUPT_GRACE + 3, took


def test_the_exit_flush_tries_once_and_briefly(tmp_path):
    import sqlite3

    from localr1.store.database import Store
    from localr1.store.errors import StoreError

    with Store.open(tmp_path / "history.db") as store:
        conversation = store.create_conversation(model="m")
        writer = store.assistant_writer(conversation.id, parent_id=None, model="m",
                                        flush_interval=3600)
        writer.add("answer", "kept")  # the row
        writer.add("answer", " and more")  # not flushed yet
        other = sqlite3.connect(store.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another program writes
            started = time.monotonic()
            with pytest.raises(StoreError):
                writer.flush_before_exit()
            took = time.monotonic() - started
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert took < 2.0, took  # not the busy wait and the retries: seconds to tens
        writer.flush_before_exit()
        assert store.message(writer.message_id).content == "kept and more"


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="reads Linux's /proc")
def test_the_socket_waiting_on_a_worker_is_found_and_read():
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        endpoint = f"127.0.0.1:{listening.getsockname()[1]}"
        with socket.create_connection(listening.getsockname()) as client:
            served, _ = listening.accept()
            with served:
                served.sendall(b"hello")
                assert client.recv(5) == b"hello"

                def last_received() -> float:
                    [state] = rpc_watchdog.worker_sockets((endpoint,))[endpoint]
                    return state.last_received

                # TCP_INFO counts in milliseconds: the request goes out in a later one.
                wait_until(lambda: last_received() >= 0.02, "a moment to pass", timeout=10)
                client.sendall(b"a request left unanswered")
                served.recv(64)
                [state] = rpc_watchdog.worker_sockets((endpoint,))[endpoint]
    assert state.last_sent < state.last_received
    assert state.unacked == 0
    assert rpc_watchdog.stalled_worker((endpoint,), {endpoint: [state]}, elapsed=5.0,
                                       limit=0.01).startswith(
        f"localr1: RPC worker {endpoint} stopped answering (no reply for ")


def test_rpc_timeout_is_a_checked_setting(tmp_path):
    from localr1.config import ConfigError, checked_setting, load_settings

    assert checked_setting("rpc_timeout", 5) == 5.0
    config = tmp_path / "config.toml"
    config.write_text("rpc_timeout = 0.5\n")
    with pytest.raises(ConfigError, match="'rpc_timeout' must be 1 to 86400 seconds"):
        load_settings(config)
    config.write_text("rpc_timeout = 90\n")
    assert load_settings(config).rpc_timeout == 90.0
