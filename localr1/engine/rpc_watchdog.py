"""A time limit on llama.cpp's RPC client: a worker that stops answering ends the process.

llama.cpp's RPC client has no timeout: when a worker vanishes without closing its connections
(power loss, a pulled cable, `kill -STOP`), its thread waits in recv() forever and so does the
llama_decode waiting on it (and Ctrl+C cannot reach Python while C runs). While an RPC-backed
model decodes, every llama_decode runs inside `decoding(n_tokens)`; a thread checks them four
times a second and ends the process with one line and exit 1 through ggml_abort.end_process
(the exit hooks flush the answer being saved, the front end's hook restores the terminal):

    localr1: RPC worker 10.0.0.2:50052 stopped answering (no reply for 31 s)

The rule: one llama_decode of n tokens trips it once it has run, and no worker has sent this
process any data, for longer than max(rpc_timeout, 2 x expected(n)), where expected(n) =
t_small + per_token x n from the last 16 decodes of each size: t_small is the slowest decode of
fewer than 32 tokens (mostly fixed cost: a step's round trips), per_token the slowest seconds
per token of a decode of 32 or more (a prompt chunk); until such a decode has been timed, the
small decodes' seconds per token stand in (an upper bound: their fixed cost counts per token).
The load's warm-up decode is not counted (its one-off costs would inflate every limit), nor is
anything older than those last decodes (one hiccup does not stretch the limit for good).
`rpc_timeout` (config.toml, default 30 s) bounds a decode of a few tokens; the scaled part lets
a long prompt chunk on a slow worker (a 70B model's 512-token chunk can take minutes) take as
long as the recent ones suggest, with room to spare. Data received is progress: in a split
model a decode waits on each worker in turn, so only one worker's share of a step is silent.
Probing a worker cannot help: llama.cpp's RPC server takes one client at a time, so a busy
worker and a stopped one both leave a new connection waiting.

Which worker (Linux): the process's TCP sockets to the workers (/proc/self/fd, /proc/net/tcp
and tcp6, the workers' addresses resolved once) and their TCP_INFO: the one waited on sent
nothing since our last request (tcpi_last_data_sent more recent than tcpi_last_data_recv).
When every worker's socket is read and none is waited on, the silence is this machine's own
compute and nothing trips (a worker stopped halfway through sending a reply looks the same and
is not caught). Unacknowledged data that the kernel keeps resending (tcpi_unacked,
tcpi_retransmits) says the machine itself is gone (power, network) rather than a stopped
process, and the line says so. Elsewhere, or for a worker whose socket is not found, the time
rule alone decides and the line names every such worker ("A or B").

Ctrl+C during a decode: the signal's wakeup fd (taken only where nobody else uses it, from the
main thread) tells the watchdog. A decode that returns lets Python raise KeyboardInterrupt as
usual, however long it takes. One still running a second after the signal ends the process the
same way with "localr1: interrupted", exit 130, only once it has run past max(1 s,
expected(n)) and a worker is waited on (or its socket cannot be read): a healthy slow decode is
cancelled, not killed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localr1.config import DEFAULT_RPC_TIMEOUT
from localr1.engine import ggml_abort

SLACK = 2.0  # times the expected time of a decode
SMALL_DECODE = 32  # decodes of fewer tokens take mostly fixed cost
RECENT = 16  # decodes of each size the expected time is taken from
TICK = 0.25
INTERRUPT_GRACE = 1.0  # a decode that answers returns within this after Ctrl+C


class DecodeTimes:
    """How long recent decodes took, as a model t(n) = t_small + per_token x n."""

    def __init__(self, recent: int = RECENT) -> None:
        self._small: deque[tuple[int, float]] = deque(maxlen=recent)  # (tokens, seconds)
        self._large: deque[float] = deque(maxlen=recent)  # seconds per token

    def record(self, n_tokens: int, seconds: float) -> None:
        if n_tokens >= SMALL_DECODE:
            self._large.append(seconds / n_tokens)
        else:
            self._small.append((max(1, n_tokens), seconds))

    def expected(self, n_tokens: int) -> float:
        """Seconds a decode of `n_tokens` is expected to take at most (0 with no history)."""
        t_small = max((seconds for _, seconds in self._small), default=0.0)
        per_token = max(self._large, default=None)
        if per_token is None:  # no prompt chunk timed yet: an upper bound from the small ones
            per_token = max((seconds / n for n, seconds in self._small), default=0.0)
        return t_small + per_token * max(1, n_tokens)

    def limit(self, n_tokens: int, floor: float) -> float:
        """The silence a decode of `n_tokens` may last: `floor` (rpc_timeout) at least."""
        return max(floor, SLACK * self.expected(n_tokens))

    def __bool__(self) -> bool:
        return bool(self._small or self._large)


_limit = DEFAULT_RPC_TIMEOUT
_lock = threading.Lock()
_decodes: dict[int, tuple[float, int]] = {}  # thread id -> (started, tokens), while decoding
_times = DecodeTimes()
_thread: threading.Thread | None = None
_resolved: dict[str, set[tuple[str, int]]] = {}  # endpoint -> its addresses, looked up once


def set_limit(seconds: float) -> None:
    """The silence a decode of a few tokens may last (config.toml's rpc_timeout)."""
    global _limit
    _limit = float(seconds)


def limit_for(n_tokens: int) -> float:
    """How long a decode of `n_tokens` may go without progress before it trips."""
    with _lock:
        return _times.limit(n_tokens, _limit)


@contextlib.contextmanager
def decoding(n_tokens: int, *, measured: bool = True) -> Iterator[None]:
    """Around one llama_decode of `n_tokens`; does nothing while no RPC worker is in use.
    `measured=False` (the load's warm-up): watched, but its time is not counted."""
    if not ggml_abort.watched_workers():
        yield
        return
    _start()
    ident = threading.get_ident()
    started = time.monotonic()
    with _lock:
        _decodes[ident] = (started, n_tokens)
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        with _lock:
            _decodes.pop(ident, None)
            if measured:
                _times.record(n_tokens, seconds)


def _start() -> None:
    global _thread
    with _lock:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_watch, args=(_wakeup_pipe(),), daemon=True,
                                   name="localr1-rpc-watchdog")
    _thread.start()


def _wakeup_pipe() -> int | None:
    """The read end of a pipe that Python's C signal handler writes each signal's number to,
    or None where it cannot be had (not the main thread, or someone else's: asyncio's)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return None
    return read_end


def _watch(wakeup: int | None) -> None:
    _resolve(ggml_abort.watched_workers())  # here, not on each tick: a lookup can hang
    interrupted: tuple[float, dict[int, tuple[float, int]]] | None = None
    while True:
        if wakeup is not None:
            readable, _, _ = select.select([wakeup], [], [], TICK)
            if readable and signal.SIGINT in os.read(wakeup, 64):
                with _lock:
                    interrupted = (time.monotonic(), dict(_decodes))
        else:
            time.sleep(TICK)
        now = time.monotonic()
        with _lock:
            decodes = dict(_decodes)
            limits = {ident: _times.limit(n, _limit) for ident, (_, n) in decodes.items()}
            expected = {ident: _times.expected(n) for ident, (_, n) in decodes.items()}
        if interrupted is not None:
            pending = [ident for ident, decode in interrupted[1].items()
                       if decodes.get(ident) == decode]
            if not pending:
                interrupted = None  # the decode returned: Python raises KeyboardInterrupt
            elif now - interrupted[0] >= INTERRUPT_GRACE:
                _check_interrupt([(now - decodes[ident][0], expected[ident])
                                  for ident in pending])
        for ident, (started, _) in decodes.items():
            if now - started > limits[ident]:
                _check(now - started, limits[ident])


def _check(elapsed: float, limit: float) -> None:
    """End the process if the workers have been silent for `limit` too."""
    workers = ggml_abort.watched_workers()
    verdict = stalled_worker(workers, worker_sockets(workers), elapsed, limit)
    if verdict is not None:
        ggml_abort.end_process(lambda: verdict, 1, verdict)


def _check_interrupt(running: list[tuple[float, float]]) -> None:
    """After Ctrl+C, end the process if a decode still running ((elapsed, expected) seconds)
    hangs on a worker."""
    workers = ggml_abort.watched_workers()
    states = worker_sockets(workers)
    if any(hangs_after_interrupt(workers, states, elapsed, expected)
           for elapsed, expected in running):
        ggml_abort.end_process(lambda: "localr1: interrupted", 130, "localr1: interrupted")


def hangs_after_interrupt(workers: tuple[str, ...], states: dict[str, list[TcpState]],
                          elapsed: float, expected: float) -> bool:
    """Whether a decode still running after Ctrl+C's grace, `elapsed` seconds in, hangs: it
    is past its `expected` time, and a worker is waited on or its socket was not found."""
    if elapsed <= max(INTERRUPT_GRACE, expected):
        return False
    return bool(awaited_workers(workers, states) or unread_workers(workers, states))


# ---- what the sockets say ------------------------------------------------------------------


@dataclass(frozen=True)
class TcpState:
    """The parts of Linux's struct tcp_info that tell waiting from silence from a dead peer;
    times in seconds since."""

    last_sent: float
    last_received: float
    unacked: int
    retransmits: int


def awaited_workers(workers: tuple[str, ...], states: dict[str, list[TcpState]]) -> list[str]:
    """The workers sent a request that they have not answered with any data since."""
    return [endpoint for endpoint in workers
            if any(state.last_sent < state.last_received for state in states.get(endpoint, []))]


def unread_workers(workers: tuple[str, ...], states: dict[str, list[TcpState]]) -> list[str]:
    """The workers none of whose sockets was read: the time rule alone speaks for them."""
    return [endpoint for endpoint in workers if not states.get(endpoint)]


def stalled_worker(workers: tuple[str, ...], states: dict[str, list[TcpState]],
                   elapsed: float, limit: float) -> str | None:
    """The line for a decode that ran `elapsed` seconds, or None while it may go on: the
    workers' sockets `states` may show data received within `limit`, or no request waiting
    on any worker (this machine computes)."""
    every = [state for found in states.values() for state in found]
    silence = min([elapsed, *(state.last_received for state in every)])
    if silence <= limit:
        return None
    named = awaited_workers(workers, states) or unread_workers(workers, states)
    if not named:
        return None  # every worker's socket was read and each answered its last request
    gone = any(state.unacked and state.retransmits
               for endpoint in named for state in states.get(endpoint, []))
    why = "its machine does not acknowledge what was sent" if gone \
        else f"no reply for {silence:.0f} s"
    return f"localr1: RPC worker {' or '.join(named)} stopped answering ({why})"


def worker_sockets(workers: tuple[str, ...]) -> dict[str, list[TcpState]]:
    """TCP_INFO of this process's connections to each of `workers` (Linux; {} elsewhere).
    Each worker's address is looked up once, the first time it is asked for."""
    found: dict[str, list[TcpState]] = {}
    with contextlib.suppress(OSError, AttributeError):
        addresses = _resolve(workers)
        peers = _tcp_peers()
        for fd_name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                link = os.readlink(f"/proc/self/fd/{fd_name}")
                if not link.startswith("socket:["):
                    continue
                peer = peers.get(int(link[8:-1]))
                endpoint = next((e for e, known in addresses.items() if peer in known), None)
                if endpoint is None:
                    continue
                state = _tcp_info(int(fd_name), int(link[8:-1]))
                if state is not None:
                    found.setdefault(endpoint, []).append(state)
    return found


def _resolve(workers: tuple[str, ...]) -> dict[str, set[tuple[str, int]]]:
    """Each of `workers`' addresses, looked up the first time only (a failure as none)."""
    for endpoint in workers:
        if endpoint not in _resolved:
            addresses: set[tuple[str, int]] = set()
            with contextlib.suppress(OSError, ValueError, UnicodeError):
                addresses = _addresses(endpoint)
            _resolved[endpoint] = addresses
    return {endpoint: _resolved[endpoint] for endpoint in workers}


def _addresses(endpoint: str) -> set[tuple[str, int]]:
    host, _, port = endpoint.rpartition(":")
    infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    return {(_plain(info[4][0]), int(port)) for info in infos}


def _plain(address: str) -> str:
    return address.removeprefix("::ffff:") if "." in address else address


def _tcp_peers() -> dict[int, tuple[str, int]]:
    """Socket inode -> (remote address, port) of every TCP socket on this machine."""
    peers: dict[int, tuple[str, int]] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                address, port = fields[2].split(":")
                raw = bytes.fromhex(address)
                # Each 32-bit word is in the machine's byte order (little-endian on Linux here).
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                peers[int(fields[9])] = (_plain(socket.inet_ntop(family, raw)), int(port, 16))
    return peers


_TCP_INFO = struct.Struct("=BBBBBBBB" + "I" * 12)  # the head of struct tcp_info


def _tcp_info(fd: int, inode: int) -> TcpState | None:
    """TCP_INFO of socket `fd`, read through a duplicate (if it still is socket `inode`)."""
    duplicate = os.dup(fd)
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        raise
    with sock:  # closes the duplicate only
        if os.fstat(duplicate).st_ino != inode:
            return None
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    values = _TCP_INFO.unpack(raw[:_TCP_INFO.size])
    retransmits, unacked = values[2], values[12]
    last_sent, last_received = values[17], values[19]  # tcpi_last_data_sent, _recv (ms)
    return TcpState(last_sent / 1000, last_received / 1000, unacked, retransmits)
