"""An eval's outcome: each model's score, side by side, stored in the history, exported.

The CLI prints what this returns (a table, JSON, one-line notes); the numbers come from
metrics, the rows it stores from store.eval_runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localr1.evaluation.metrics import ModelScore, compare, score_model
from localr1.evaluation.problems import ProblemSet
from localr1.evaluation.results_file import ResultsFile
from localr1.evaluation.runner import EvalSettings
from localr1.evaluation.sft_export import ExportSummary, export_sft

_IDS_SHOWN = 20
_LABEL_WIDTH = 20


class EvalReport:
    def __init__(self, problem_set: ProblemSet, settings: EvalSettings) -> None:
        self.problem_set = problem_set
        self.settings = settings
        self.started_at = datetime.now(UTC)
        self.scores: list[ModelScore] = []
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self.decoded: set[str] = set()

    def add(self, model: str, results: ResultsFile, decoded: int = 1) -> ModelScore:
        """`model`'s score from its samples in `results`; `decoded`: how many this run decoded
        (0: a rerun that found every sample done, which adds no history row)."""
        ids = {problem.id for problem in self.problem_set.problems}
        samples = results.samples(model, ids, self.settings.samples)
        score = score_model(model, samples, self.problem_set)
        self.samples[model] = samples
        if decoded:
            self.decoded.add(model)
        self.scores = [s for s in self.scores if s.model != model] + [score]
        return score

    # ---- failures ------------------------------------------------------------------------

    @property
    def failed_samples(self) -> int:
        return sum(1 for samples in self.samples.values() for s in samples if s.get("error"))

    def failure_lines(self) -> list[str]:
        lines = []
        for model, samples in self.samples.items():
            failed = [s for s in samples if s.get("error")]
            if failed:
                hint = "; lower --max-tokens to what the server's context holds" \
                    if "max_tokens" in failed[0]["error"] else ""
                lines.append(f"{model}: {len(failed)} sample{'s' if len(failed) != 1 else ''} "
                             f"could not be decoded (first: {failed[0]['error']}){hint}")
            unchecked = [s for s in samples if s.get("check_note") and not s.get("correct")]
            if unchecked:
                lines.append(f"{model}: {len(unchecked)} answer(s) counted wrong: "
                             f"{unchecked[0]['check_note']}")
        return lines

    # ---- output --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        problem_set = self.problem_set
        return {
            "set": {"name": problem_set.name, "problems": len(problem_set.problems),
                    "source": problem_set.source, "license": problem_set.license,
                    "digest": problem_set.digest},
            "settings": {"samples": self.settings.samples, **self.settings.recorded()},
            "models": [score.to_json() for score in self.scores],
            "comparisons": [compare(self.scores[0], other).to_json()
                            for other in self.scores[1:]],
        }

    def table_lines(self) -> list[str]:
        """The scores, one column per model; then, against the first model, the problems
        only one of the two solves."""
        k = self.settings.samples
        width = max([12, *(len(score.model) + 2 for score in self.scores)])

        def row(label: str, cells: list[str]) -> str:
            return (label.ljust(_LABEL_WIDTH) + "".join(c.ljust(width) for c in cells)).rstrip()

        scores = self.scores
        decoded = {score.model: any(not s.get("error") for s in self.samples[score.model])
                   for score in scores}

        def rate(score: ModelScore, value: float) -> str:
            return _percent(value) if decoded[score.model] else "-"

        lines = [
            row("", [s.model for s in scores]),
            row("pass@1", [rate(s, s.pass_at_1) for s in scores]),
            row("  95% interval", [_interval(s) if decoded[s.model] else "-" for s in scores]),
            row(f"cons@{k}", [rate(s, s.cons_at_k) for s in scores]),
            row("format", [rate(s, s.format_rate) for s in scores]),
            row("reasoning tokens", [_number(s.mean_reasoning_tokens, "{:.0f}") for s in scores]),
            row("seconds / sample", [_number(s.mean_seconds, "{:.2f}") for s in scores]),
            row("seconds / problem", [_number(s.seconds_per_problem, "{:.2f}") for s in scores]),
            row("problems", [f"{s.problems} x {s.samples_per_problem}" for s in scores]),
        ]
        for other in scores[1:]:
            comparison = compare(scores[0], other)
            lines.append(_solved_only(comparison.model_a, comparison.model_b, comparison.only_a))
            lines.append(_solved_only(comparison.model_b, comparison.model_a, comparison.only_b))
        return lines

    # ---- history and export ----------------------------------------------------------------

    def save(self, model: str, db_path: Path, results_path: Path | None) -> bool:
        """`model`'s history row, written as soon as the model is done (a later model's
        failure or Ctrl+C must not lose it). Not when a sample failed (a failed sample is not a
        wrong answer: the score would be too low), nor when the same row is there already (a
        rerun that decoded nothing). False when left out for failed samples."""
        from localr1.store import Store

        score = next(s for s in self.scores if s.model == model)
        if any(s.get("error") for s in self.samples[model]):
            return False
        if not score.samples:
            return True
        interval = score.pass_at_1_interval or (None, None)
        row = dict(
            model=score.model, set_name=self.problem_set.name,
            set_digest=self.problem_set.digest, problems=score.problems,
            samples=score.samples_per_problem, pass_at_1=score.pass_at_1,
            ci_low=interval[0], ci_high=interval[1], cons_at_k=score.cons_at_k,
            format_rate=score.format_rate, mean_reasoning_tokens=score.mean_reasoning_tokens,
            seconds_per_sample=score.mean_seconds, params=self.settings.recorded(),
            solved=score.solved,
            results_path=str(results_path.resolve()) if results_path else None)
        store = Store.open(db_path)
        try:
            if model in self.decoded or not _stored(store, row):
                store.add_eval_run(**row, started_at=self.started_at)
        finally:
            store.close()
        return True

    def export_sft(self, path: Path, *, max_solved: int | None,
                   shortest: bool) -> ExportSummary:
        problems = {problem.id: problem for problem in self.problem_set.problems}
        samples = [s for model_samples in self.samples.values() for s in model_samples]
        return export_sft(samples, problems, path, max_solved=max_solved, shortest=shortest)


def _stored(store, row: dict[str, Any]) -> bool:
    """Whether the history has this very result already (same model, set, settings, counts,
    results file and scores)."""
    keys = ("set_digest", "problems", "samples", "pass_at_1", "cons_at_k", "params",
            "results_path")
    return any(all(getattr(run, key) == row[key] for key in keys)
               and tuple(run.solved) == tuple(row["solved"])
               for run in store.eval_runs(model=row["model"], limit=None))


def history_records(db_path: Path, models: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Past runs as plain data, the newest first (only `models`' when given)."""
    from localr1.store import Store

    if not db_path.exists():
        return []
    store = Store.open(db_path, read_only=True)
    try:
        runs = [run for model in models for run in store.eval_runs(model=model, limit=None)] \
            if models else store.eval_runs(limit=None)
    finally:
        store.close()
    runs.sort(key=lambda run: (run.finished_at, run.id), reverse=True)
    return [run.as_dict() for run in runs]


def history_lines(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return ["no eval runs yet: try `localr1 eval quick`"]
    lines = []
    for run in records:
        interval = "" if run["ci_low"] is None else \
            f" ({_percent(run['ci_low'])}-{_percent(run['ci_high'])})"
        lines.append(f"{run['finished_at'][:16].replace('T', ' ')}  {run['model']}  "
                     f"{run['set_name']} {run['problems']}x{run['samples']}  "
                     f"pass@1 {_percent(run['pass_at_1'])}{interval}  "
                     f"cons@{run['samples']} {_percent(run['cons_at_k'])}  "
                     f"format {_percent(run['format_rate'])}")
    return lines


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _interval(score: ModelScore) -> str:
    if score.pass_at_1_interval is None:
        return "-"
    low, high = score.pass_at_1_interval
    return f"{low * 100:.1f}-{high * 100:.1f}"


def _number(value: float | None, style: str) -> str:
    return "-" if value is None else style.format(value)


def _solved_only(model: str, other: str, ids: tuple[str, ...]) -> str:
    shown = ", ".join(ids[:_IDS_SHOWN])
    more = f" and {len(ids) - _IDS_SHOWN} more" if len(ids) > _IDS_SHOWN else ""
    return f"solved by {model}, not {other} ({len(ids)})" + (f": {shown}{more}" if ids else "")
