"""Scores from sample records: pass@1 with its interval, cons@K, format rate, cost per sample.

A record is one line of `localr1 eval -o` (see runner): `model`, `problem`, `sample`,
`correct`, `format_ok`, `answer_key`, `reasoning_tokens`, `seconds`, `error`. Records of a
run still going are fine: a problem counts once it has a sample, with the samples it has.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from localr1.evaluation.problems import ProblemSet

Record = Mapping[str, Any]


@dataclass(frozen=True)
class ModelScore:
    model: str
    problems: int  # problems with at least one sample
    samples: int
    samples_per_problem: int  # K: the most samples any problem has
    pass_at_1: float
    pass_at_1_interval: tuple[float, float] | None  # 95 %, None under two problems
    cons_at_k: float
    format_rate: float
    mean_reasoning_tokens: float | None  # both means are over the samples that decoded
    mean_seconds: float | None
    # Decoding time of all of a problem's samples, averaged over problems (under --parallel
    # the samples overlap, so the wall clock spent is less).
    seconds_per_problem: float | None
    attempted: tuple[str, ...]  # problem ids with samples, in the set's order
    solved: tuple[str, ...]  # problem ids whose majority vote is correct, in the set's order

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "problems": self.problems,
            "samples": self.samples,
            "samples_per_problem": self.samples_per_problem,
            "pass_at_1": self.pass_at_1,
            "pass_at_1_interval": list(self.pass_at_1_interval)
            if self.pass_at_1_interval is not None else None,
            "cons_at_k": self.cons_at_k,
            "format_rate": self.format_rate,
            "mean_reasoning_tokens": self.mean_reasoning_tokens,
            "mean_seconds": self.mean_seconds,
            "seconds_per_problem": self.seconds_per_problem,
            "attempted": list(self.attempted),
            "solved": list(self.solved),
        }


@dataclass(frozen=True)
class Comparison:
    """Problems both models attempted that one solves (by majority vote) and the other not."""

    model_a: str
    model_b: str
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"model_a": self.model_a, "model_b": self.model_b,
                "only_a": list(self.only_a), "only_b": list(self.only_b)}


def score_models(records: Iterable[Record], problem_set: ProblemSet) -> list[ModelScore]:
    """One score per model, in the order models first appear in the records."""
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    return [score_model(model, model_records, problem_set)
            for model, model_records in by_model.items()]


def score_model(model: str, records: Iterable[Record], problem_set: ProblemSet) -> ModelScore:
    """The score of `model` from its records; records of other models, of problems not in
    the set, and repeats of a (problem, sample) already seen are ignored."""
    samples = _samples_by_problem(model, records, problem_set)
    attempted = tuple(p.id for p in problem_set.problems if samples.get(p.id))
    per_problem = [samples[problem_id] for problem_id in attempted]
    all_samples = [record for problem in per_problem for record in problem]
    rates = [sum(_correct(r) for r in problem) / len(problem) for problem in per_problem]
    solved = tuple(problem_id for problem_id in attempted
                   if _majority_correct(samples[problem_id]))
    return ModelScore(
        model=model,
        problems=len(attempted),
        samples=len(all_samples),
        samples_per_problem=max((len(problem) for problem in per_problem), default=0),
        pass_at_1=statistics.fmean(rates) if rates else 0.0,
        pass_at_1_interval=pass_at_1_interval(rates),
        cons_at_k=len(solved) / len(attempted) if attempted else 0.0,
        format_rate=_fraction(all_samples, _format_ok),
        mean_reasoning_tokens=_mean(all_samples, "reasoning_tokens"),
        mean_seconds=_mean(all_samples, "seconds"),
        seconds_per_problem=_mean_sum(per_problem, "seconds"),
        attempted=attempted,
        solved=solved,
    )


def pass_at_1_interval(rates: list[float]) -> tuple[float, float] | None:
    """The 95 % interval of the mean of per-problem pass rates, clustered by problem: samples
    of one problem are not independent, so the standard error comes from the spread of the
    problems' rates (Miller 2024, "Adding Error Bars to Evals"), with the normal 1.96. When
    every problem has the same rate (all solved, all missed) that spread is 0 and would claim
    certainty: then the Wilson interval of that rate over the problems."""
    if len(rates) < 2:
        return None
    mean = statistics.fmean(rates)
    spread = statistics.stdev(rates)
    if spread == 0:
        return _wilson(mean, len(rates))
    half_width = 1.96 * spread / math.sqrt(len(rates))
    return max(0.0, mean - half_width), min(1.0, mean + half_width)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def compare(a: ModelScore, b: ModelScore) -> Comparison:
    both = set(a.attempted) & set(b.attempted)
    solved_a, solved_b = set(a.solved), set(b.solved)
    return Comparison(
        a.model, b.model,
        only_a=tuple(p for p in a.solved if p in both and p not in solved_b),
        only_b=tuple(p for p in b.solved if p in both and p not in solved_a),
    )


def majority_key(samples: list[Record]) -> str | None:
    """The answer most samples gave (by answer_key, in sample order); a tie goes to the answer
    seen first, samples without a key do not vote, and no votes gives None."""
    votes: dict[str, int] = {}
    for record in samples:
        key = _answer_key(record)
        if key is not None:
            votes[key] = votes.get(key, 0) + 1
    if not votes:
        return None
    return max(votes, key=votes.__getitem__)  # max keeps the first of equal counts


def _majority_correct(samples: list[Record]) -> bool:
    winner = majority_key(samples)
    return winner is not None and any(
        _answer_key(r) == winner and _correct(r) for r in samples)


def _samples_by_problem(model: str, records: Iterable[Record],
                        problem_set: ProblemSet) -> dict[str, list[Record]]:
    wanted = {p.id for p in problem_set.problems}
    found: dict[str, dict[int, Record]] = {}
    for record in records:
        if record["model"] != model or record["problem"] not in wanted:
            continue
        found.setdefault(record["problem"], {}).setdefault(record["sample"], record)
    return {problem_id: [by_sample[s] for s in sorted(by_sample)]
            for problem_id, by_sample in found.items()}


# A sample that could not be decoded counts as wrong and badly formatted, and does not vote.
def _correct(record: Record) -> bool:
    return not record.get("error") and bool(record.get("correct"))


def _format_ok(record: Record) -> bool:
    return not record.get("error") and bool(record.get("format_ok"))


def _answer_key(record: Record) -> str | None:
    return None if record.get("error") else record.get("answer_key")


def _fraction(records: list[Record], rule) -> float:
    return sum(rule(r) for r in records) / len(records) if records else 0.0


def _mean_sum(per_problem: list[list[Record]], field: str) -> float | None:
    """The mean over problems of a field summed over each problem's decoded samples (None when
    no sample decoded)."""
    decoded = [[r[field] for r in problem if r.get(field) is not None and not r.get("error")]
               for problem in per_problem]
    sums = [sum(values) for values in decoded if values]
    return statistics.fmean(sums) if sums else None


def _mean(records: list[Record], field: str) -> float | None:
    values = [r[field] for r in records if r.get(field) is not None and not r.get("error")]
    return statistics.fmean(values) if values else None
