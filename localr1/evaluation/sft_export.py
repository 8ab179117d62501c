"""`localr1 eval --export-sft`: R1's rejection sampling, the first step of its distillation.

Of the evaluated samples, only those that pass both of R1's rules (a correct boxed answer and a
closed think block before a non-empty answer) become training examples: a chat-format JSONL in
the "messages" shape TRL, axolotl and most fine-tuning tools read, with the reasoning inside a
``<think>`` block of the assistant turn and again as a field of its own.

Two optional filters pick the useful traces: ``max_solved`` keeps only problems a model solved
(a correct answer, whatever the format) in at most that many of its samples: the hard ones;
``shortest`` keeps one trace per problem, the shortest passing one of all the models.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localr1.errors import LocalR1Error
from localr1.evaluation.problems import Problem, user_prompt

# Why a sample was left out (the keys of ExportSummary.skipped), in the order they are checked.
DUPLICATE = "duplicate"
UNKNOWN_PROBLEM = "unknown problem"
FAILED = "error"
WRONG = "wrong answer"
BAD_FORMAT = "bad format"
SOLVED_TOO_OFTEN = "solved too often"
NOT_SHORTEST = "not the shortest"

REQUIRED_FIELDS = ("model", "problem", "sample")


@dataclass(frozen=True)
class ExportSummary:
    written: int  # training records in the file
    problems: int  # distinct problems with at least one record
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> samples left out


@dataclass(frozen=True)
class _Sample:
    record: Mapping
    model: str
    problem: Problem
    number: int

    @property
    def group(self) -> tuple[str, str]:
        return self.model, self.problem.id


def export_sft(samples: Iterable[Mapping], problems: Mapping[str, Problem], out,
               *, max_solved: int | None = None, shortest: bool = False) -> ExportSummary:
    """Write the samples that pass both rules (and the filters) to `out` as chat JSONL.

    `samples` are the sample records of `localr1 eval -o`, `problems` the set's problems by id.
    The file appears whole or not at all; records are ordered by the set's problem order, then
    model (first seen first), then sample number, so the same results always give the same file.
    """
    if max_solved is not None and max_solved < 0:
        raise LocalR1Error(f"max_solved must be 0 or more, not {max_solved}")
    skipped: Counter[str] = Counter()
    passed, solved = _passing(samples, problems, skipped)
    if max_solved is not None:
        passed = _drop(passed, lambda s: solved[s.group] > max_solved, SOLVED_TOO_OFTEN,
                       skipped)
    if shortest:
        best = {}
        for sample in passed:
            if sample.problem.id not in best or _length(sample) < _length(best[sample.problem.id]):
                best[sample.problem.id] = sample
        passed = _drop(passed, lambda s: best[s.problem.id] is not s, NOT_SHORTEST, skipped)
    order = {problem_id: index for index, problem_id in enumerate(problems)}
    models: dict[str, int] = {}
    for sample in passed:
        models.setdefault(sample.model, len(models))
    passed.sort(key=lambda s: (order[s.problem.id], models[s.model], s.number))
    _write(Path(out), (training_record(s.record, s.problem) for s in passed))
    return ExportSummary(written=len(passed),
                         problems=len({s.problem.id for s in passed}),
                         skipped=dict(skipped))


def training_record(record: Mapping, problem: Problem) -> dict:
    """One fine-tuning example from a passing sample record."""
    prompt = record.get("prompt")
    if prompt is None:
        prompt = user_prompt(problem)
    reasoning, answer = _texts(record)
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant",
             "content": "<think>\n" + reasoning + "\n</think>\n\n" + answer},
        ],
        "reasoning": reasoning,
        "answer": answer,
        "problem_id": problem.id,
        "reference": problem.answer,
        "model": record["model"],
        "sample": record["sample"],
    }


def json_line(record: dict) -> str:
    """A JSONL line, readable text (ensure_ascii=False) that stays one line for every reader:
    U+2028/U+2029 are escaped, since str.splitlines and JavaScript treat them as line ends."""
    text = json.dumps(record, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def _passing(samples: Iterable[Mapping], problems: Mapping[str, Problem],
             skipped: Counter[str]) -> tuple[list[_Sample], Counter[tuple[str, str]]]:
    """The samples that pass both rules, and how many samples solved each (model, problem)."""
    seen: set[tuple[str, str, int]] = set()
    passed: list[_Sample] = []
    solved: Counter[tuple[str, str]] = Counter()
    for index, record in enumerate(samples, start=1):
        missing = [name for name in REQUIRED_FIELDS if name not in record]
        if missing:
            raise LocalR1Error(f"sample record {index} has no {', '.join(missing)}")
        model, problem_id, number = str(record["model"]), str(record["problem"]), \
            record["sample"]
        if (model, problem_id, number) in seen:
            skipped[DUPLICATE] += 1
            continue
        seen.add((model, problem_id, number))
        problem = problems.get(problem_id)
        reason = _rejection(record, problem)
        if record.get("correct") is True and not record.get("error"):
            solved[model, problem_id] += 1
        if reason:
            skipped[reason] += 1
        else:
            passed.append(_Sample(record, model, problem, number))
    return passed, solved


def _rejection(record: Mapping, problem: Problem | None) -> str | None:
    """Why a sample fails R1's rules (the first reason), or None when it passes."""
    if problem is None:
        return UNKNOWN_PROBLEM
    if record.get("error"):
        return FAILED
    if record.get("correct") is not True:
        return WRONG
    if record.get("format_ok") is not True:
        return BAD_FORMAT
    return None


def _drop(samples: list[_Sample], reject, reason: str, skipped: Counter[str]) -> list[_Sample]:
    kept = []
    for sample in samples:
        if reject(sample):
            skipped[reason] += 1
        else:
            kept.append(sample)
    return kept


def _length(sample: _Sample) -> tuple:
    """Shorter first: fewest reasoning tokens (unknown counts last), shortest text, lowest
    sample number (a tie after that keeps the sample seen first)."""
    tokens = sample.record.get("reasoning_tokens")
    return (tokens is None, tokens or 0, sum(map(len, _texts(sample.record))), sample.number)


def _texts(record: Mapping) -> tuple[str, str]:
    """The reasoning and the answer ("" for a think block or answer the record leaves null)."""
    return record.get("reasoning") or "", record.get("answer") or ""


def _write(path: Path, records: Iterable[dict]) -> None:
    try:
        if _written_through(path):
            # An alias of an open descriptor (/dev/stdout, /dev/fd/3) goes on from where the
            # shell's `>` or `>>` left its file: what was printed before (the score table) stays.
            mode = "a" if path.is_symlink() else "w"
            with open(path, mode, encoding="utf-8", newline="\n",
                      errors="backslashreplace") as f:
                f.writelines(map(json_line, records))
        else:
            _write_atomically(path.resolve(), records)  # a symlink's target, not the link
    except OSError as exc:
        raise LocalR1Error(f"{path}: cannot write the SFT export: {exc.strerror or exc}") \
            from None


def _written_through(path: Path) -> bool:
    """Whether to write into `path` itself rather than rename a new file over it: a device or
    a pipe (/dev/full, a FIFO: a rename would replace the device), and anything under /dev/ or
    /proc/, judged before symlinks are followed: /dev/stdout leads to the shell's regular file
    when output goes to one, and replacing that file would lose it and all printed before."""
    if os.path.abspath(path).startswith(("/dev/", "/proc/")):
        return True
    return path.exists() and not path.is_file()


def _write_atomically(path: Path, records: Iterable[dict]) -> None:
    """Write to a temporary file beside `path` and rename it at the end: an interrupted export
    leaves the old file (or none), never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # A lone surrogate (no Unicode, but valid in JSON) is written as JSON's \\udXXX escape.
        with open(temporary, "w", encoding="utf-8", newline="\n",
                  errors="backslashreplace") as f:
            f.writelines(map(json_line, records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _remove(temporary: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. it was never created: the folder is missing
        temporary.unlink()
