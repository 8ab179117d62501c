"""`localr1 eval`: DeepSeek-R1's rule-based reward on local models, side by side."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import click

from localr1.cli.endpoint_options import connect_endpoint, endpoint_options
from localr1.cli.engine_options import EngineFlags, engine_options
from localr1.cli.params import setting_check
from localr1.terminal_text import safe_echo


@click.command("eval")
@click.argument("problem_set", metavar="SET", required=False)
@click.option("-m", "--model", "models", multiple=True,
              help="Model name or .gguf path; repeat to compare (default: config's model).")
@click.option("-k", "--samples", default=4, show_default=True, type=click.IntRange(1, 1024),
              help="Samples per problem (pass@1 is their mean, cons@K their majority vote).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N problems.")
@click.option("-p", "--parallel", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Samples decoded at once (with --endpoint: requests in flight).")
@click.option("--max-tokens", default=8192, show_default=True, type=click.IntRange(min=1),
              help="Per sample, reasoning included (R1's reports: 32768).")
@click.option("--temperature", default=0.6, show_default=True, type=click.FloatRange(0, 5),
              callback=setting_check("temperature"))
@click.option("--top-p", default=0.95, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), callback=setting_check("top_p"))
@click.option("--seed", default=0, show_default=True, type=int, callback=setting_check("seed"),
              help="Each sample's seed derives from it: reruns (same --parallel) give the "
                   "same samples.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file the samples stream to; a rerun continues it.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.option("--history", is_flag=True, help="List past eval runs (with -m: that model's).")
@click.option("--export-sft", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the samples that pass both rules as chat-format JSONL.")
@click.option("--sft-max-solved", type=click.IntRange(min=1), metavar="M",
              help="--export-sft: only problems solved in at most M of their samples.")
@click.option("--sft-shortest", is_flag=True,
              help="--export-sft: only the shortest correct trace per problem.")
@click.option("--threads", type=click.IntRange(min=1), callback=setting_check("threads"))
@click.option("--gpu-layers", help="auto, all, 0 (CPU) or a count.")
@click.option("--chat-format", help="Prompt format for GGUFs without a usable template.")
@endpoint_options
@engine_options
def eval_command(problem_set: str | None, models: tuple[str, ...], samples: int,
                 limit: int | None, parallel: int, max_tokens: int, temperature: float,
                 top_p: float, seed: int, output: Path | None, as_json: bool, history: bool,
                 export_sft: Path | None, sft_max_solved: int | None, sft_shortest: bool,
                 threads, gpu_layers, chat_format, endpoint, api_key,
                 engine_flags: EngineFlags) -> None:
    """Score models on SET with DeepSeek-R1's rules: the last \\boxed{} answer checked with
    math-verify, and the reasoning in a closed think block.

    \b
    SET: a JSONL file ({"id", "problem", "answer"}, optional "prompt") or a built-in set:
      quick      40 generated problems shipped with localr1 (offline)
      gsm8k      GSM8K test (1,319 problems, MIT), downloaded once from the Hub
      math-500   MATH-500 (500 problems, MIT), downloaded once from the Hub

    \b
      localr1 eval quick -m r1:7b
      localr1 eval math-500 -m r1:7b-q4_k_m -m r1:7b-q8_0 --limit 100 -p 4 -o q.jsonl
      localr1 eval --history
    """
    from localr1.paths import app_paths

    paths = app_paths()
    if history:
        if problem_set is not None or output is not None or export_sft is not None:
            raise click.UsageError("--history lists past runs: give it no SET, -o or "
                                   "--export-sft (only -m and --json)")
        _print_history(paths, models, as_json)
        return
    if problem_set is None:
        raise click.UsageError("give a SET (quick, gsm8k, math-500 or a .jsonl file), "
                               "or --history")
    if (sft_max_solved is not None or sft_shortest) and export_sft is None:
        raise click.UsageError("--sft-max-solved and --sft-shortest need --export-sft FILE")
    _check_output_paths(output, export_sft, problem_set)
    local_only = {"--gpu-layers": gpu_layers, "--threads": threads,
                  "--chat-format": chat_format, **engine_flags.local_only()}

    from localr1.evaluation.report import EvalReport
    from localr1.evaluation.results_file import ResultsFile, header
    from localr1.evaluation.runner import EvalSettings
    from localr1.evaluation.scoring import AnswerChecker
    from localr1.evaluation.set_names import resolve_problem_set

    # Every model named before anything is decoded: a typo in the last -m loses no work.
    if endpoint is not None and len(set(models)) < len(models):
        raise click.UsageError("a model is named twice")
    local_models = [] if endpoint is not None else _choose_models(models, paths)
    full_set = resolve_problem_set(problem_set, paths.data_dir, _download_progress())
    chosen_set = full_set.limited(limit)
    settings = EvalSettings(samples=samples, temperature=temperature, top_p=top_p,
                            max_tokens=max_tokens, seed=seed)
    # Opened first: a results file of another run is refused before anything is said or run.
    results = ResultsFile(output, header(full_set.name, full_set.digest, settings.recorded()))
    facts = [f"{len(chosen_set.problems)} of {len(full_set.problems)} problems", full_set.source,
             *([f"license {full_set.license}"] if full_set.license else []),
             f"{samples} sample{'s' if samples != 1 else ''} each",
             f"temperature {temperature}", f"top-p {top_p}", f"up to {max_tokens} tokens"]
    safe_echo(f"eval {chosen_set.name}: " + " · ".join(facts), err=True)
    report = EvalReport(chosen_set, settings)
    history_notes: list[str | None] = []
    with results, AnswerChecker() as checker:
        for target in local_models if endpoint is None else (models or (None,)):
            if endpoint is not None:
                engine = connect_endpoint(endpoint, target, api_key, local_only=local_only)
                run = _endpoint_run(engine, parallel, report)
            else:
                run = _local_run(target, chosen_set, settings, parallel, threads, gpu_layers,
                                 chat_format, engine_flags, paths)
            summary = _evaluate(run, chosen_set, settings, results, checker)
            report.add(run.label, results, decoded=summary.done + summary.failed)
            history_notes.append(_save(report, run.label, paths, output))
    if as_json:
        safe_echo(json.dumps(report.to_json(), indent=2))
    else:
        safe_echo("\n".join(report.table_lines()))
    for line in report.failure_lines():
        safe_echo(f"localr1: {line}", err=True)
    if export_sft is not None:
        summary = report.export_sft(export_sft, max_solved=sft_max_solved, shortest=sft_shortest)
        skipped = ", ".join(f"{count} {reason}" for reason, count in summary.skipped.items())
        safe_echo(f"export: {summary.written} samples of {summary.problems} problems to "
                  f"{export_sft}" + (f" (left out: {skipped})" if skipped else ""), err=True)
    for note in filter(None, history_notes):
        safe_echo(f"localr1: {note}", err=True)
    if report.failed_samples:
        sys.exit(1)


def _save(report, model: str, paths, output: Path | None) -> str | None:
    """`model`'s history row, as soon as it is done; a note when it is not kept (the scores
    are printed all the same)."""
    from localr1.errors import LocalR1Error

    try:
        if report.save(model, paths.db_path, output):
            return None
    except LocalR1Error as exc:
        return f"{model}: not kept in the history: {exc}"
    return f"{model}: not kept in the history (samples failed; a rerun with the same -o " \
        "tries them again)"


def _check_output_paths(output: Path | None, export_sft: Path | None,
                        problem_set: str) -> None:
    """-o and --export-sft must be files of their own: not each other (by any path), not the
    problem set they are made from, and -o not the stdout the table goes to."""
    def same(a: Path, b: Path) -> bool:
        if a.expanduser().resolve() == b.expanduser().resolve():
            return True
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    set_file = Path(problem_set) if problem_set and Path(problem_set).is_file() else None
    for option, path in (("-o", output), ("--export-sft", export_sft)):
        if path is not None and set_file is not None and same(path, set_file):
            raise click.UsageError(f"{option} would overwrite the problem set {problem_set}")
    if output is None:
        return
    if export_sft is not None and same(output, export_sft):
        raise click.UsageError("-o and --export-sft must be different files")
    if same(output, Path("/dev/stdout")):
        raise click.UsageError("-o cannot be stdout (the scores are printed there); give a file")


def _choose_models(models: tuple[str, ...], paths) -> list:
    from localr1.cli.main import no_model_message
    from localr1.config import load_settings
    from localr1.models.choice import choose_model

    app_settings = load_settings(paths.config_file)
    chosen = []
    for model in models or (None,):
        found = choose_model(model, app_settings, paths)
        if found is None:
            raise click.UsageError(no_model_message(paths))
        chosen.append(found)
    by_name: dict[str, Path] = {}
    for found in chosen:
        other = by_name.setdefault(found.name, found.path)
        if other != found.path:
            raise click.UsageError(f"two models go by the name {found.name!r} ({other} and "
                                   f"{found.path}); import one under another name")
    if len({found.path.resolve() for found in chosen}) < len(chosen):
        raise click.UsageError("a model is named twice")
    return chosen


def _endpoint_run(engine, parallel: int, report):
    from localr1.evaluation.runner import ModelRun

    if any(score.model == engine.info.name for score in report.scores):
        raise click.UsageError(f"the model {engine.info.name!r} is named twice")
    return ModelRun(engine, engine.info.name, parallel=parallel)


def _local_run(chosen, problem_set, settings, parallel, threads, gpu_layers, chat_format,
               engine_flags, paths):
    from localr1.cli.main import gpu_layers_option_value
    from localr1.config import load_settings
    from localr1.engine.llama_engine import Engine, EngineConfig
    from localr1.evaluation.runner import ModelRun, reply_room
    from localr1.models.choice import record_use

    app_settings = load_settings(paths.config_file)
    config = EngineConfig.from_settings(
        chosen.path, app_settings, context_size=2048,
        gpu_layers=gpu_layers_option_value(gpu_layers), threads=threads,
        chat_format=chat_format, **engine_flags.engine_overrides(app_settings, paths.models_dir))
    engine = Engine.load(config)
    label = record_use(chosen, paths.models_dir, remember=False).name
    try:
        n_ctx, prompt_tokens = _context_per_sample(engine, problem_set, settings)
    except BaseException:
        engine.close()
        raise
    run = ModelRun(engine, label, parallel=parallel, n_ctx_per_sequence=n_ctx,
                   threads=threads or 0, prompt_tokens=prompt_tokens)
    rooms = [reply_room(run, problem, settings.max_tokens) for problem in problem_set.problems]
    short = [room for room in rooms if room < settings.max_tokens]
    if short:
        safe_echo(f"localr1: {label}'s context of {n_ctx} tokens leaves fewer than "
                  f"{settings.max_tokens} tokens per sample for {len(short)} of {len(rooms)} "
                  f"problems (down to {max(min(short), 0)})", err=True)
    return run


def _evaluate(run, problem_set, settings, results, checker):
    from localr1.cli.batch import decoding
    from localr1.evaluation.runner import evaluate_model

    progress = EvalProgress(run.label, results, problem_set, settings.samples) \
        if sys.stderr.isatty() else None
    with decoding(progress) as cancel, run.engine:
        return evaluate_model(run, problem_set, settings, results, checker, progress, cancel)


def _context_per_sample(engine, problem_set, settings) -> tuple[int, dict[str, int]]:
    """(context per sequence, each problem's prompt tokens): room for the longest prompt (in
    tokens: digits and CJK take more per character) and the whole reply, within what the
    model was trained on."""
    from localr1.chat_message import ChatMessage
    from localr1.evaluation.problems import user_prompt
    from localr1.evaluation.runner import PROMPT_MARGIN

    params = settings.params()
    tokens = {problem.id: len(engine.prepare_prompt(
        (ChatMessage("user", user_prompt(problem)),), params, n_ctx=1 << 20).tokens)
        for problem in problem_set.problems}
    needed = max(tokens.values()) + PROMPT_MARGIN + settings.max_tokens
    return min(needed, engine.info.n_ctx_train or needed), tokens


def _download_progress():
    from localr1.cli.pull_progress import PullProgressPrinter

    return PullProgressPrinter()


def _history_name(model: str, paths) -> str:
    """The name runs of `model` are stored under (a path's model goes by its file's name)."""
    from localr1.config import load_settings
    from localr1.errors import LocalR1Error
    from localr1.models.choice import choose_model

    try:
        chosen = choose_model(model, load_settings(paths.config_file), paths)
    except LocalR1Error:  # a model since removed: its runs are still under that name
        return model
    return chosen.name if chosen is not None else model


def _print_history(paths, models: tuple[str, ...], as_json: bool) -> None:
    from localr1.evaluation.report import history_lines, history_records

    names = tuple(dict.fromkeys(_history_name(m, paths) for m in models))
    records = history_records(paths.db_path, names)
    if as_json:
        safe_echo(json.dumps(records, indent=2))
        return
    if not records and names:
        safe_echo(f"no eval runs of {', '.join(names)}")
        return
    for line in history_lines(records):
        safe_echo(line)


class EvalProgress:
    """One self-rewriting stderr line: a bar of the samples done, tokens/s, the ETA, and
    pass@1 so far (the batch runner reports as each sample finishes)."""

    _BAR = 20

    def __init__(self, label: str, results, problem_set, samples: int) -> None:
        from localr1.terminal_text import visible_controls

        self.label = visible_controls(label)  # an endpoint's model id is anyone's text
        self.model = label
        self.results = results
        self.problem_ids = {problem.id for problem in problem_set.problems}
        self.samples = samples

    def __call__(self, summary, total: int) -> None:
        finished = summary.done + summary.failed
        filled = self._BAR * finished // total if total else self._BAR
        eta = ""
        if finished and summary.seconds > 0 and finished < total:
            left = summary.seconds / finished * (total - finished)
            eta = f" · ETA {int(left // 60)}:{int(left % 60):02d}"
        known = self.results.samples(self.model, self.problem_ids, self.samples)
        so_far = f" · pass@1 so far {sum(bool(s.get('correct')) for s in known) / len(known):.0%}" \
            if known else ""
        line = (f"{self.label} [{'#' * filled}{'.' * (self._BAR - filled)}] "
                f"{finished}/{total} samples · {summary.tokens_per_second:.1f} tok/s{eta}{so_far}")
        # One terminal row, or every redraw would leave its wrapped part behind.
        width = shutil.get_terminal_size((80, 24)).columns - 1
        sys.stderr.write(f"\r\x1b[K{line[:width]}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
