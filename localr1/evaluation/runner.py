"""Sampling a model on a problem set and scoring each sample as it finishes.

Every (problem, sample) pair is one record of the batch runner, so decoding goes through the
same parallel decoder as `localr1 batch --parallel` (or an endpoint's requests in flight), with
a seed derived from the run's seed and the pair: the same sample text whatever the order or
resume (at the same --parallel: another batches llama.cpp's arithmetic differently). Each
finished sample is scored (the last `\\boxed{}` of the answer checked with math-verify, and
R1's format rule) and appended to the results file at once, so a killed run loses only the
samples in flight and a rerun decodes only what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localr1.batch import BatchItem, BatchOptions, BatchSummary, record_seed, run_batch
from localr1.chat_message import ChatMessage
from localr1.engine.events import GenerationParams
from localr1.evaluation.problems import Problem, ProblemSet, user_prompt
from localr1.evaluation.results_file import ResultsFile, sample_key
from localr1.evaluation.scoring import AnswerChecker, format_ok, last_boxed

# DeepSeek-R1's evaluation settings (its README): temperature 0.6, top-p 0.95, no system prompt.
R1_TEMPERATURE = 0.6
R1_TOP_P = 0.95
DEFAULT_SAMPLES = 4
# R1's reports allow 32,768 tokens; 8,192 keeps a laptop's KV cache small and covers most
# GSM8K/MATH-500 traces of the distills (--max-tokens 32768 matches the paper).
DEFAULT_MAX_TOKENS = 8192
DEFAULT_SEED = 0


@dataclass(frozen=True)
class EvalSettings:
    """What decides a sample's text: a results file holds samples of one such setting only."""

    samples: int = DEFAULT_SAMPLES
    temperature: float = R1_TEMPERATURE
    top_p: float = R1_TOP_P
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = DEFAULT_SEED

    def params(self) -> GenerationParams:
        # R1's protocol, not the user's chat settings: no top-k/min-p/penalties, no budget.
        return GenerationParams(temperature=self.temperature, top_p=self.top_p, top_k=0,
                                min_p=0.0, repeat_penalty=1.0, max_tokens=self.max_tokens,
                                reasoning_budget=-1)

    def recorded(self) -> dict[str, Any]:
        """The settings a results file and the history keep (samples is not one of them: a
        rerun with more samples extends the same file)."""
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True)
class ModelRun:
    """One model's turn in an eval: the engine and how the decoder may use it."""

    engine: Any  # Engine or RemoteEngine
    label: str  # the model's name as the user knows it
    parallel: int = 1
    n_ctx_per_sequence: int = 4096
    threads: int = 0
    # Each problem's prompt tokens (local models): a problem whose prompt and --max-tokens do
    # not both fit the context gets what fits, and one whose prompt alone does not fit fails
    # alone; the settings (and so the results file) keep what was asked.
    prompt_tokens: dict[str, int] | None = None


# Tokens kept free beyond the prompt's for the template's closing tokens.
PROMPT_MARGIN = 16


def reply_room(run: ModelRun, problem: Problem, max_tokens: int) -> int:
    """The tokens a reply to `problem` may take in `run`'s context (< 1: none fits)."""
    if run.prompt_tokens is None:
        return max_tokens  # an endpoint: the server fits it
    room = run.n_ctx_per_sequence - run.prompt_tokens[problem.id] - PROMPT_MARGIN
    return min(max_tokens, room)


def sample_id(problem_id: str, sample: int) -> str:
    return f"{problem_id}#{sample}"


def pending_items(problem_set: ProblemSet, settings: EvalSettings, done: set[tuple[str, str, int]],
                  run: ModelRun) -> list[tuple[BatchItem, Problem, int]]:
    """The (problem, sample) pairs of `run`'s model not yet in the results, problem by
    problem, each with the reply room its prompt leaves."""
    pending = []
    for line, problem in enumerate(problem_set.problems, start=1):
        room = reply_room(run, problem, settings.max_tokens)
        for sample in range(settings.samples):
            if sample_key(run.label, problem.id, sample) in done:
                continue
            item_id = sample_id(problem.id, sample)
            if room < 1:
                item = BatchItem(id=item_id, line=line, error=(
                    f"problem {problem.id}: its prompt needs {run.prompt_tokens[problem.id]} "
                    f"tokens, more than the model's context of {run.n_ctx_per_sequence} "
                    "leaves"))
            else:
                item = BatchItem(id=item_id, line=line,
                                 messages=(ChatMessage("user", user_prompt(problem)),),
                                 params={"max_tokens": room}
                                 if room < settings.max_tokens else {})
            pending.append((item, problem, sample))
    return pending


def scored_sample(record: dict[str, Any], problem: Problem, sample: int, seed: int,
                  checker: AnswerChecker) -> dict[str, Any]:
    """A batch record as an eval sample: R1's two rules applied to it."""
    failed = record.get("answer") is None  # the batch runner could not decode it at all
    answer = record.get("answer") or ""
    reasoning = record.get("reasoning") or ""
    extracted = None if failed else last_boxed(answer)
    correct, key, note = False, None, None
    if extracted is not None:
        verdict = checker.check(extracted, problem.answer)
        correct, key, note = verdict.correct, verdict.key, verdict.note
    usage = record.get("usage") or {}
    timings = record.get("timings") or {}
    return {
        "model": record["model"],
        "problem": problem.id,
        "sample": sample,
        "seed": seed,
        "prompt": user_prompt(problem),
        "reasoning": reasoning,
        "answer": answer,
        "extracted": extracted,
        "answer_key": key,
        "correct": correct,
        "format_ok": (not failed) and format_ok(reasoning, answer),
        "finish_reason": record.get("finish_reason"),
        "reasoning_tokens": usage.get("reasoning_tokens", 0),
        "completion_tokens": usage.get("completion_tokens", 0),
        "seconds": timings.get("seconds", 0.0),
        "check_note": note,
        "error": record.get("error") if failed else None,
    }


def evaluate_model(run: ModelRun, problem_set: ProblemSet, settings: EvalSettings,
                   results: ResultsFile, checker: AnswerChecker,
                   progress: Callable[[BatchSummary, int], None] | None = None,
                   cancel: threading.Event | None = None) -> BatchSummary:
    """Decode and score `run`'s missing samples of `problem_set`, appending each to
    `results` as it finishes."""
    pending = pending_items(problem_set, settings, results.done_keys(), run)
    by_id = {item.id: (problem, sample) for item, problem, sample in pending}
    options = BatchOptions(model_label=run.label, params=settings.params(),
                           parallel=run.parallel, n_ctx_per_sequence=run.n_ctx_per_sequence,
                           threads=run.threads, seed=settings.seed)

    def write(record: dict[str, Any], item: BatchItem) -> None:
        problem, sample = by_id[item.id]
        results.append(scored_sample(record, problem, sample,
                                     record_seed(settings.seed, item.id), checker))

    return run_batch(run.engine, [item for item, _, _ in pending], options, write, progress,
                     cancel)
