"""The child side of `model_process`: a process that owns one loaded model and answers its
parent over a multiprocessing connection.

Why a process: llama.cpp's RPC client ends the whole process when a worker is lost (the abort
in ggml-rpc.cpp cannot be survived, see ggml_abort), so the TUI and `serve` keep a model that
uses RPC workers here and outlive it. Its fd 1 and 2 go to a log file the parent reads: the
last "localr1: ..." line there (ggml_abort's or the decode watchdog's) is why it ended.

Messages are tuples, the first item their kind. Parent to child: ("chat", turn, history,
params, system_prompt), ("cancel", turn), ("answer_now", turn), ("call", call, name, args),
("request", request, prompt, params, seed), ("cancel_request", request), ("run",),
("close_feed",), ("cancel_all",), ("close",). Child to parent: ("ready", info) or ("failed",
error) once, then ("event", turn, event), ("turn_failed", turn, error), ("result", call,
value), ("raised", call, error), ("request_event", request, event) and ("run_done", error or
None).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from localr1.child_process import ignore_ctrl_c
from localr1.errors import GenerationError, LocalR1Error


def host_main(connection: Any, config: Any, log_path: str) -> None:
    """The child's entry point (multiprocessing spawn): load, then serve until told to close
    or the parent goes away."""
    ignore_ctrl_c()  # it reaches the whole process group: the parent decides when this ends
    _log_to(log_path)
    host = _Host(connection)
    try:
        host.load(config)
        host.serve()
    finally:
        # llama.cpp's threads and a decode in flight must not hold the exit back.
        os._exit(0)


def _log_to(log_path: str) -> None:
    """C and Python output both to the log: nothing may reach the parent's terminal (the TUI
    draws there)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class _Host:
    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._send_lock = threading.Lock()
        self._engine: Any = None
        self._turn_flags: dict[int, tuple[threading.Event, threading.Event]] = {}
        self._decoder: Any = None
        self._feed: Any = None
        self._request_cancels: dict[int, threading.Event] = {}
        self._cancel_all = threading.Event()

    def send(self, *message: Any) -> None:
        with self._send_lock:
            self._connection.send(message)

    def load(self, config: Any) -> None:
        from localr1.engine.llama_engine import Engine

        try:
            self._engine = Engine.load(config)
        except LocalR1Error as exc:
            self.send("failed", exc)
            return
        except Exception as exc:  # llama.cpp can raise anything: the parent says it in one line
            self.send("failed", LocalR1Error(f"{type(exc).__name__}: {exc}"))
            return
        self.send("ready", self._engine.info)

    def serve(self) -> None:
        if self._engine is None:
            return
        handlers: dict[str, Callable[..., None]] = {
            "chat": self._chat, "cancel": self._set_turn_flag(0),
            "answer_now": self._set_turn_flag(1), "call": self._call,
            "request": self._request, "cancel_request": self._cancel_request,
            "run": self._run, "close_feed": self._close_feed,
            "cancel_all": lambda: self._cancel_all.set(),
        }
        while True:
            try:
                kind, *args = self._connection.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if kind == "close":
                return
            handlers[kind](*args)

    # ---- chat turns (the TUI) ----------------------------------------------------------------

    def _chat(self, turn: int, history: Any, params: Any, system_prompt: str | None) -> None:
        cancel, answer_now = threading.Event(), threading.Event()
        self._turn_flags[turn] = (cancel, answer_now)

        def stream() -> None:
            try:
                for event in self._engine.stream_chat(history, params,
                                                      system_prompt=system_prompt,
                                                      cancel=cancel, answer_now=answer_now):
                    self.send("event", turn, event)
            except Exception as exc:
                self.send("turn_failed", turn, _portable(exc))
            finally:
                self._turn_flags.pop(turn, None)

        threading.Thread(target=stream, name=f"localr1-turn-{turn}", daemon=True).start()

    def _set_turn_flag(self, which: int) -> Callable[[int], None]:
        def set_flag(turn: int) -> None:
            flags = self._turn_flags.get(turn)
            if flags is not None:
                flags[which].set()
        return set_flag

    # ---- calls on the engine (serve's request building) --------------------------------------

    def _call(self, call: int, name: str, args: tuple[Any, ...]) -> None:
        """On a thread of its own: a slow grammar must not hold up other requests' cancels.
        The parent waits for open_decoder's result before it sends requests."""
        threading.Thread(target=self._answer_call, args=(call, name, args),
                         name=f"localr1-call-{call}", daemon=True).start()

    def _answer_call(self, call: int, name: str, args: tuple[Any, ...]) -> None:
        try:
            if name == "prepare_prompt":
                history, params, system_prompt, n_ctx = args
                value = self._engine.prepare_prompt(history, params, system_prompt=system_prompt,
                                                    n_ctx=n_ctx)
            elif name == "check_grammar":
                from localr1.engine.decode_loop import check_grammar

                value = check_grammar(self._engine, *args)
            elif name == "open_decoder":
                value = self._open_decoder(*args)
            elif name == "close_decoder":
                value = self._close_decoder()
            else:
                raise LocalR1Error(f"the model process has no call {name!r}")
        except Exception as exc:
            self.send("raised", call, _portable(exc))
        else:
            self.send("result", call, value)

    # ---- the parallel decoder (serve) --------------------------------------------------------

    def _open_decoder(self, parallel: int, n_ctx: int, threads: int | None) -> None:
        from localr1.engine.parallel_decoder import ParallelDecoder, RequestFeed

        self._close_decoder()
        self._decoder = ParallelDecoder(self._engine, parallel, n_ctx, threads)
        self._feed = RequestFeed()
        self._cancel_all = threading.Event()

    def _close_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def _request(self, request: int, prompt: Any, params: Any, seed: int | None) -> None:
        from localr1.engine.parallel_decoder import SequenceRequest

        cancel = threading.Event()
        self._request_cancels[request] = cancel
        self._feed.put(SequenceRequest(key=request, prompt=prompt, params=params, seed=seed,
                                       cancel=cancel))

    def _cancel_request(self, request: int) -> None:
        cancel = self._request_cancels.get(request)
        if cancel is not None:
            cancel.set()

    def _close_feed(self) -> None:
        self._feed.close()

    def _run(self) -> None:
        from localr1.engine.events import TurnDone

        decoder, feed, cancel_all = self._decoder, self._feed, self._cancel_all

        def sink(request: int, event: Any) -> None:
            if isinstance(event, TurnDone):
                self._request_cancels.pop(request, None)
            self.send("request_event", request, event)

        def run() -> None:
            try:
                decoder.run(feed, sink, cancel_all)
            except Exception as exc:
                self.send("run_done", str(exc) or type(exc).__name__)
            else:
                self.send("run_done", None)

        threading.Thread(target=run, name="localr1-decoder", daemon=True).start()


def _portable(exc: BaseException) -> BaseException:
    """`exc` as the parent can unpickle it: our errors as they are, anything else as a one-line
    GenerationError."""
    if isinstance(exc, LocalR1Error):
        return exc
    return GenerationError(f"{type(exc).__name__}: {exc}")
