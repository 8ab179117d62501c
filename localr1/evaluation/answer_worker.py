"""The answer checker's child process: math-verify judges one extracted answer at a time.

Runs only in a spawned child (see scoring.AnswerChecker): math-verify times itself out with
signal.alarm, which works only in a main thread, and sympy can hang in C code or eat memory on
a hostile answer, so the parent keeps a deadline and kills this process when it passes.
Requests and replies are JSON objects over a multiprocessing pipe:
`{"gold": str, "answer": str}` -> `{"correct": bool, "key": str | None, "note": str | None}`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import warnings
from typing import Any

from localr1.child_process import ignore_ctrl_c

# math-verify's own per-step timeouts (whole seconds, signal.alarm). A check takes at most
# JUDGE_STEPS of them (the reference parsed twice, the answer once, the comparison once), and
# all together stay inside the parent's deadline (scoring.DEFAULT_DEADLINE_S, 10 s), so a slow
# check ends in a reply rather than a killed child.
STEP_TIMEOUT_S = 2
JUDGE_STEPS = 4
GOLD_CACHE_SIZE = 512  # references parsed once per child: every sample of a problem shares one
# Address space cap: a power tower evaluated by sympy fails with MemoryError instead of
# swapping the machine. The child with sympy and math-verify loaded peaks near 65 MB.
MEMORY_LIMIT_BYTES = 3 << 30


def serve(conn) -> None:
    """Answer requests until the parent closes its end of the pipe."""
    ignore_ctrl_c()
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
    try:
        conn.send_bytes(json.dumps({"ready": True}).encode())
    except OSError:  # the parent stopped waiting for us (Ctrl+C while we started)
        return
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

    gold_parsed = parsed_gold(gold)
    answer_parsed = _parse(f"${answer}$")
    key = answer_key(answer_parsed, answer)
    if not gold_parsed:
        # The reference is no mathematics math-verify reads (a word, a letter): compare text.
        return {"correct": normalized(answer) == normalized(gold), "key": key,
                "note": "reference compared as text"}
    if not answer_parsed:
        return {"correct": False, "key": key, "note": "answer not understood by math-verify"}
    if _is_word(gold_parsed, gold):  # math-verify would take any anagram (a letters product)
        correct = key == answer_key(gold_parsed, gold)
    else:
        correct = verify(gold_parsed, answer_parsed, timeout_seconds=STEP_TIMEOUT_S)
    return {"correct": bool(correct), "key": key, "note": None}


def _is_word(parsed: list, text: str) -> bool:
    import sympy

    expr = parsed[0] if parsed else None
    return isinstance(expr, sympy.Basic) and _letters_only(expr) \
        and bool(_WORD.search(_COMMAND.sub("", _unwrapped(text))))


def answer_key(parsed: list, text: str) -> str:
    """One string per answer value for the majority vote: 42 and 42.0 give "42", \\frac{1}{2}
    and 0.5 give "1/2", {1,2} and {2,1} give "{1, 2}", `x = 5` gives "5", `10\\%` gives "10".
    Nothing is simplified beyond that (no evaluation: a power tower would never finish); what
    math-verify cannot read keys as its whitespace-normalized text, and a word as its lower-cased
    text (math-verify reads `Evelyn` as a product of letters, the same as `Evenly`)."""
    import sympy

    expr = parsed[0] if parsed else None
    if not isinstance(expr, sympy.Basic):
        return normalized(text)
    if _letters_only(expr) and _WORD.search(_COMMAND.sub("", _unwrapped(text))):
        return normalized(_unwrapped(text).lower())
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        expr = expr.rhs  # an assignment: the value is the answer
    if _PERCENT.search(text):
        expr = _without_hundredth(expr)
    if isinstance(expr, sympy.Float):
        return str(sympy.Rational(str(expr)))  # from the decimal digits: 0.1 is 1/10
    floats = expr.atoms(sympy.Float)
    if floats:
        with sympy.evaluate(False):  # rebuilding must not evaluate a huge power
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
    return str(expr)


_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")  # \alpha is one symbol, not a word
_WORD = re.compile(r"[A-Za-z]{2}")
_PERCENT = re.compile(r"\\?%\s*$")


def _unwrapped(text: str) -> str:
    return _TEXT_COMMAND.sub(r"\1", text)


def _letters_only(expr) -> bool:
    """A symbol, or a product or power of symbols: how math-verify reads a word (its E and I
    become Euler's number and the imaginary unit)."""
    import sympy
    from sympy.core.numbers import ImaginaryUnit, NumberSymbol

    if isinstance(expr, sympy.Symbol | NumberSymbol | ImaginaryUnit):
        return True
    if isinstance(expr, sympy.Pow):
        return _letters_only(expr.base) and expr.exp.is_Integer and expr.exp > 0
    return isinstance(expr, sympy.Mul) and all(map(_letters_only, expr.args))


def _without_hundredth(expr):
    """`x\\%`, which math-verify reads as x * 1/100, as x: the same vote as a bare x (math-verify
    judges both right against a reference x). Anything else stays as it is."""
    import sympy

    if not isinstance(expr, sympy.Mul):
        return expr
    hundredth = sympy.Rational(1, 100)
    rest = [arg for arg in expr.args if not (arg == hundredth or (
        isinstance(arg, sympy.UnevaluatedExpr) and arg.args[0] == hundredth))]
    if len(rest) != len(expr.args) - 1:
        return expr
    if len(rest) == 1:
        return rest[0]
    with sympy.evaluate(False):
        return sympy.Mul(*rest)


def normalized(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=GOLD_CACHE_SIZE)
def parsed_gold(gold: str) -> list:
    """The reference as math-verify reads it (callers must not change the list: it is cached).
    References come as bare LaTeX ("\\frac{1}{2}") or numbers; math-verify's LaTeX extraction
    wants math delimiters, the expression one reads "1/2" or "1,000" as is."""
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
