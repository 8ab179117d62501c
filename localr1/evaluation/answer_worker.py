"""The answer checker's child process: math-verify judges one extracted answer at a time.

Runs only in a spawned child (see scoring.AnswerChecker): math-verify times itself out with
signal.alarm, which works only in a main thread, and sympy can hang in C code or eat memory on
a hostile answer, so the parent keeps a deadline and kills this process when it passes.
Requests and replies are JSON objects over a multiprocessing pipe:
`{"gold": str, "answer": str}` -> `{"correct": bool, "key": str | None, "note": str | None}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import warnings
from typing import Any

# math-verify's own per-step timeouts (whole seconds, signal.alarm); the parent's deadline
# is the hard limit for the whole check.
STEP_TIMEOUT_S = 3
# Address space cap: a power tower evaluated by sympy fails with MemoryError instead of
# swapping the machine. The child with sympy and math-verify loaded peaks near 65 MB.
MEMORY_LIMIT_BYTES = 3 << 30


def serve(conn) -> None:
    """Answer requests until the parent closes its end of the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    _limit_memory()
    warnings.simplefilter("ignore")
    # math-verify logs warnings per odd answer; with no handler Python would print them.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    try:
        import math_verify  # noqa: F401
    except Exception as exc:  # reported to the parent as one line, then the child ends
        conn.send_bytes(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
                        .encode())
        return
    conn.send_bytes(json.dumps({"ready": True}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            reply = judge(request["gold"], request["answer"])
        except MemoryError:
            reply = {"correct": False, "key": normalized(request["answer"]),
                     "note": "too large to check"}
        except Exception as exc:  # a math-verify or sympy bug must not end the run
            reply = {"correct": False, "key": normalized(request["answer"]),
                     "note": f"could not be checked: {type(exc).__name__}"}
        conn.send_bytes(json.dumps(reply).encode())


def judge(gold: str, answer: str) -> dict[str, Any]:
    """Whether `answer` (a boxed answer's content) equals `gold`, with the answer's vote key."""
    from math_verify import verify

    gold_parsed = _parse_gold(gold)
    answer_parsed = _parse(f"${answer}$")
    key = answer_key(answer_parsed, answer)
    if not gold_parsed:
        # The reference is no mathematics math-verify reads (a word, a letter): compare text.
        return {"correct": normalized(answer) == normalized(gold), "key": key,
                "note": "reference compared as text"}
    if not answer_parsed:
        return {"correct": False, "key": key, "note": "answer not understood by math-verify"}
    correct = verify(gold_parsed, answer_parsed, timeout_seconds=STEP_TIMEOUT_S)
    return {"correct": bool(correct), "key": key, "note": None}


def answer_key(parsed: list, text: str) -> str:
    """One string per answer value for the majority vote: 42 and 42.0 give "42", \\frac{1}{2}
    and 0.5 give "1/2", {1,2} and {2,1} give "{1, 2}", `x = 5` gives "5". Nothing is simplified
    beyond that (no evaluation: a power tower would never finish); what math-verify cannot
    read keys as its whitespace-normalized text."""
    import sympy

    expr = parsed[0] if parsed else None
    if not isinstance(expr, sympy.Basic):
        return normalized(text)
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        expr = expr.rhs  # an assignment: the value is the answer
    if isinstance(expr, sympy.Float):
        return str(sympy.Rational(str(expr)))  # from the decimal digits: 0.1 is 1/10
    floats = expr.atoms(sympy.Float)
    if floats:
        with sympy.evaluate(False):  # rebuilding must not evaluate a huge power
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
    return str(expr)


def normalized(text: str) -> str:
    return " ".join(text.split())


def _parse_gold(gold: str) -> list:
    # References come as bare LaTeX ("\frac{1}{2}") or numbers; math-verify's LaTeX
    # extraction wants math delimiters, the expression one reads "1/2" or "1,000" as is.
    return _parse(f"${gold}$") or _parse(gold)


def _parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(text, [LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=STEP_TIMEOUT_S)


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # Windows: no address-space limits
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > MEMORY_LIMIT_BYTES:
        with contextlib.suppress(ValueError, OSError):  # macOS refuses address-space limits
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, hard))
