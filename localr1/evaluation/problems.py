"""Problems and problem sets: what `localr1 eval` asks a model, whatever the set came from.

A set is a JSONL file (`{"id", "problem", "answer"}`, optional `"prompt"`), the built-in
generated set, or a public set downloaded from the Hub. Its digest ties result files and the
history to the exact problems, so a rerun never mixes samples of two different sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from localr1.errors import LocalR1Error

# DeepSeek-R1's recommended instruction for math problems (its README, "Usage Recommendations").
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Bounds that keep a hostile or mistaken file from exhausting memory before the first problem.
MAX_PROBLEMS = 100_000
MAX_TEXT_CHARS = 200_000
MAX_ID_CHARS = 200


class ProblemSetError(LocalR1Error):
    """A problem set that cannot be used (unreadable, malformed line, duplicate id)."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    prompt: str | None = None  # a whole user prompt, instead of problem + R1_INSTRUCTION


@dataclass(frozen=True)
class ProblemSet:
    name: str
    problems: tuple[Problem, ...]
    source: str
    license: str | None
    digest: str

    def limited(self, limit: int | None) -> ProblemSet:
        """The first `limit` problems (the digest stays the whole set's: a rerun with a larger
        --limit continues the same results file)."""
        if limit is None or limit >= len(self.problems):
            return self
        return ProblemSet(self.name, self.problems[:limit], self.source, self.license,
                          self.digest)


def user_prompt(problem: Problem) -> str:
    return problem.prompt if problem.prompt is not None else \
        f"{problem.problem}\n{R1_INSTRUCTION}"


def make_problem_set(name: str, problems: Iterable[Problem], *, source: str,
                     license: str | None = None) -> ProblemSet:
    """A checked set: at least one problem, unique ids, non-empty texts."""
    problems = tuple(problems)
    if not problems:
        raise ProblemSetError(f"{name}: no problems")
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise ProblemSetError(f"{name}: duplicate problem id {problem.id!r}")
        seen.add(problem.id)
        if not problem.problem.strip() and not (problem.prompt or "").strip():
            raise ProblemSetError(f"{name}: problem {problem.id!r} has no text")
        if not problem.answer.strip():
            raise ProblemSetError(f"{name}: problem {problem.id!r} has no answer")
    canonical = json.dumps([[p.id, p.problem, p.answer, p.prompt] for p in problems],
                           ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return ProblemSet(name, problems, source, license, digest)


def parse_problem_lines(name: str, lines: Iterable[str], *, source: str,
                        license: str | None = None) -> ProblemSet:
    """JSONL lines to a set; a bad line stops it with `name:line: what is wrong`."""
    problems = []
    lines_of: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(problems) >= MAX_PROBLEMS:
            raise ProblemSetError(f"{name}: more than {MAX_PROBLEMS} problems")
        problem = _problem(name, number, line)
        earlier = lines_of.setdefault(problem.id, number)
        if earlier != number:
            raise ProblemSetError(f"{name}:{number}: duplicate problem id {problem.id!r} (also "
                                  f"on line {earlier}; a line without an id takes its number)")
        problems.append(problem)
    return make_problem_set(name, problems, source=source, license=license)


def _problem(name: str, number: int, line: str) -> Problem:
    where = f"{name}:{number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProblemSetError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") \
            from None
    if not isinstance(data, dict):
        raise ProblemSetError(f"{where}: expected a JSON object")
    problem_id = data.get("id", number)
    if isinstance(problem_id, bool) or not isinstance(problem_id, str | int):
        raise ProblemSetError(f"{where}: id must be a string or an integer")
    if isinstance(problem_id, str) and not problem_id.strip():
        raise ProblemSetError(f"{where}: id is blank")
    if len(str(problem_id)) > MAX_ID_CHARS:
        raise ProblemSetError(f"{where}: id is longer than {MAX_ID_CHARS} characters")
    texts = {}
    for key in ("problem", "answer", "prompt"):
        value = data.get(key)
        if key == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
            value = json.dumps(value)  # 42 or 0.5 written as numbers
        if value is None and key == "prompt":
            texts[key] = None
            continue
        if not isinstance(value, str):
            need = "a string" if key == "prompt" else "a non-empty string"
            raise ProblemSetError(f'{where}: "{key}" must be {need}')
        if len(value) > MAX_TEXT_CHARS:
            raise ProblemSetError(f'{where}: "{key}" is longer than {MAX_TEXT_CHARS} characters')
        texts[key] = value
    if not texts["problem"].strip() and not (texts["prompt"] or "").strip():
        raise ProblemSetError(f'{where}: "problem" is empty')
    if not texts["answer"].strip():
        raise ProblemSetError(f'{where}: "answer" is empty')
    return Problem(str(problem_id), texts["problem"], texts["answer"], texts["prompt"])


def load_problem_file(path) -> ProblemSet:
    """A JSONL file of problems; one-line errors for unreadable files and bad lines."""
    from pathlib import Path

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return parse_problem_lines(path.name, _bounded(f, path), source=str(path))
    except OSError as exc:
        raise ProblemSetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ProblemSetError(f"{path}: not UTF-8 text") from None


def _bounded(f, path) -> Iterable[str]:
    limit = MAX_TEXT_CHARS * 4
    number = 0
    while line := f.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise ProblemSetError(f"{path.name}:{number}: line longer than {limit} characters")
        yield line
