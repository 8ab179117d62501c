"""DeepSeek-R1's rule-based reward for one sample: the accuracy rule (the last `\\boxed{}` of
the answer, or its last run of boxes joined, checked against the reference with math-verify)
and the format rule (a closed, non-empty think block with an answer after it).

math-verify runs in a spawned child process (never forked: the parent has llama.cpp loaded)
with a deadline per check; see answer_worker for why.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
import time
from dataclasses import dataclass

from localr1.child_process import starting_child
from localr1.errors import LocalR1Error
from localr1.evaluation import answer_worker

DEFAULT_DEADLINE_S = 10.0
# The child imports sympy and math-verify: 0.3-0.4 s on a two-core machine; generous for
# a loaded one.
STARTUP_DEADLINE_S = 60.0

_BOX_OPENING = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may stand between boxes that together are one answer (see last_boxed).
_BOX_SEPARATOR = re.compile(r"(?:[\s$,]|\b(?:and|or)\b)*")


class AnswerCheckerError(LocalR1Error):
    """math-verify could not be started (not installed, or its child process failed)."""


def last_boxed(answer: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` in `answer`, nested braces
    included; None when there is none, when the last one never closes, or when it is blank.
    A box inside a box belongs to the outer one.

    Several answers boxed one after the other ("the roots are $\\boxed{-2}$ and
    $\\boxed{3}$") come back joined by ", " ("-2, 3", which math-verify reads as a set, as
    open-r1's reward does): the trailing run of boxes with only whitespace, `$`, `,`, "and" or
    "or" between them. Any other text between two boxes ("\\boxed{1}, then corrected:
    \\boxed{2}") ends the run: the last box alone is the answer. Blank boxes add nothing."""
    run: list[str] = []
    position = 0
    while match := _BOX_OPENING.search(answer, position):
        end = _closing_brace(answer, match.end())
        if end is None:
            return None  # an unclosed box runs to the end of the text: it is the last one
        if position and not _BOX_SEPARATOR.fullmatch(answer, position, match.start()):
            run = []
        run.append(answer[match.end():end].strip())
        position = end + 1
    contents = [content for content in run if content]
    return ", ".join(contents) if contents else None


def _closing_brace(text: str, start: int) -> int | None:
    depth = 1
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2  # \{ and \} are literal braces (sets), \\ a line break
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def format_ok(reasoning: str, answer: str) -> bool:
    """R1's format rule. The engine puts everything after an unclosed <think> into the
    reasoning, so a non-empty answer means the block was closed."""
    return bool(reasoning.strip()) and bool(answer.strip())


@dataclass(frozen=True)
class Verdict:
    correct: bool
    key: str | None  # the answer's canonical form: equal keys vote together in cons@K
    note: str | None = None  # why a check was not a plain yes or no


class AnswerChecker:
    """Checks extracted answers against references with math-verify in a child process.

    Started on the first check, usable from any thread (one check at a time), closed by
    `with` or close(). A check that passes its deadline kills the child (the next check
    starts a new one) and is judged wrong, keyed by the answer's whitespace-normalized text.
    """

    def __init__(self, deadline_s: float = DEFAULT_DEADLINE_S):
        self.deadline_s = deadline_s
        self.startup_seconds: float | None = None  # the last child start, for reports
        self._lock = threading.Lock()
        self._process = None
        self._conn = None

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def check(self, extracted: str | None, reference: str) -> Verdict:
        if extracted is None:
            return Verdict(False, None)
        with self._lock:
            conn = self._started()
            try:
                conn.send_bytes(json.dumps({"gold": reference, "answer": extracted}).encode())
                if not conn.poll(self.deadline_s):
                    self._stop(kill=True)
                    return Verdict(False, answer_worker.normalized(extracted),
                                   f"could not be checked in {self.deadline_s:g} s")
                reply = json.loads(conn.recv_bytes())
            except (EOFError, OSError):
                self._process.join(timeout=2)
                code = self._process.exitcode
                self._stop(kill=True)
                return Verdict(False, answer_worker.normalized(extracted),
                               f"the answer checker stopped (exit code {code})")
            except BaseException:
                self._stop(kill=True)  # a reply still owed would answer the next check
                raise
        return Verdict(bool(reply["correct"]), reply["key"], reply["note"])

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self):
        if self._conn is not None and self._process.is_alive():
            return self._conn
        self._stop()  # a child that died between checks (killed, out of memory) is replaced
        started = time.monotonic()
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(target=answer_worker.serve, args=(child_end,),
                                  name="localr1-answer-checker", daemon=True)
        try:
            with starting_child():
                try:
                    process.start()
                finally:
                    child_end.close()  # the child's copy only: its exit then ends our poll
                self._process, self._conn = process, parent_end
            # A Ctrl+C while blocked arrives here, in the parent, and stops the child below.
            if not parent_end.poll(STARTUP_DEADLINE_S):
                raise AnswerCheckerError(
                    f"math-verify did not start in {STARTUP_DEADLINE_S:g} s")
            hello = json.loads(parent_end.recv_bytes())
        except EOFError:
            self._stop()
            raise AnswerCheckerError("math-verify's process ended while starting") from None
        except BaseException:
            self._stop(kill=True)  # a child still starting has nothing to finish
            raise
        if not hello.get("ready"):
            self._stop()
            raise AnswerCheckerError(f"cannot start math-verify: {hello.get('error')}")
        self.startup_seconds = time.monotonic() - started
        return parent_end

    def _stop(self, kill: bool = False) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()  # an idle child's recv ends with EOFError and it returns
        if process is not None:
            if kill:
                process.kill()
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()


