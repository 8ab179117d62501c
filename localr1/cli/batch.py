"""`localr1 batch`: answer many prompts from a file or stdin, JSONL out, resumable."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click

from localr1.cli.endpoint_options import (
    answer_format,
    connect_endpoint,
    endpoint_options,
    json_schema_option,
)
from localr1.cli.engine_options import EngineFlags, engine_options
from localr1.cli.params import setting_check
from localr1.terminal_text import safe_echo, safe_write


@click.command()
@click.argument("input_path", metavar="[INPUT]", required=False,
                type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file to append to; a rerun skips ids answered there. "
                   "Default: stdout.")
@click.option("-m", "--model", help="Model name or path to a .gguf file (default: config).")
@click.option("-p", "--parallel", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Records decoded at once in one llama.cpp context (with --endpoint: "
                   "requests in flight at once).")
@click.option("--template", "template_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Prompt template file with {input} and {id}.")
@click.option("--format", "input_format", type=click.Choice(["auto", "jsonl", "text"]),
              default="auto", show_default=True, help="How to read INPUT.")
@click.option("-s", "--system", help="System prompt for records that have none.")
@click.option("--seed", type=int, callback=setting_check("seed"),
              help="Makes every record reproducible (at the same --parallel).")
@click.option("--save", is_flag=True, help="Also save each record as a conversation.")
@click.option("--max-tokens", type=click.IntRange(min=0), callback=setting_check("max_tokens"),
              help="Per record (0 = no limit).")
@click.option("--temperature", type=click.FloatRange(0, 5), callback=setting_check("temperature"))
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
              callback=setting_check("top_p"))
@click.option("--ctx", type=click.IntRange(min=64), callback=setting_check("context_size"),
              help="Context per record, in tokens.")
@click.option("--threads", type=click.IntRange(min=1), callback=setting_check("threads"))
@click.option("--gpu-layers", help="auto, all, 0 (CPU) or a count.")
@click.option("--reasoning-budget", type=click.IntRange(min=-1),
              callback=setting_check("reasoning_budget"))
@click.option("--chat-format", help="Prompt format for GGUFs without a usable template.")
@json_schema_option
@endpoint_options
@engine_options
def batch(input_path: Path | None, output: Path | None, model: str | None, parallel: int,
          template_path: Path | None, input_format: str, system: str | None, seed: int | None,
          save: bool, max_tokens, temperature, top_p, ctx, threads, gpu_layers,
          reasoning_budget, chat_format, json_schema, endpoint, api_key,
          engine_flags: EngineFlags) -> None:
    """Answer every prompt in INPUT (JSONL, text lines, or stdin) as JSONL records.

    \b
    JSONL lines: {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]},
    optionally with "system" and "params" ({"temperature": 0.2, "max_tokens": 500, ...}).
    Text lines: one prompt per line; the id is the line number.

    \b
      localr1 batch questions.jsonl -o answers.jsonl --parallel 4
      cat prompts.txt | localr1 batch --template tmpl.txt > out.jsonl
      localr1 batch questions.jsonl --endpoint http://gpu-box:8080/v1 --parallel 8
    """
    from localr1.batch import (
        BatchOptions,
        BatchOutputError,
        items_to_resume,
        iter_input_lines,
        open_output_for_append,
        read_items,
        run_batch,
    )
    from localr1.cli.main import gpu_layers_option_value, no_model_message
    from localr1.config import load_settings
    from localr1.engine.llama_engine import Engine, EngineConfig, GenerationParams
    from localr1.models.choice import choose_model, record_use
    from localr1.models.decode_options import draft_name
    from localr1.paths import app_paths

    paths = app_paths()
    settings = load_settings(paths.config_file)
    template = _read_template(template_path) if template_path else None
    if template is not None and "{input}" not in template:
        raise click.UsageError(f"{template_path} has no {{input}} placeholder")
    if input_path is None and (sys.stdin is None or sys.stdin.isatty()):
        raise click.UsageError("no input: give INPUT or pipe prompts on stdin")
    source = None if input_path in (None, Path("-")) else input_path
    kind = input_format
    if kind == "auto" and source is not None:
        kind = {".jsonl": "jsonl", ".json": "jsonl", ".txt": "text"}.get(source.suffix, "auto")
    stdin = None if source is not None else \
        io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    items = read_items(iter_input_lines(source, stdin), kind=kind, template=template)
    skipped = 0
    if output is not None:
        before = len(items)
        items = items_to_resume(items, output)
        skipped = before - len(items)

    answer_grammar, response_format = answer_format(json_schema)
    n_ctx = ctx or settings.context_size
    if endpoint is not None:  # --parallel N: N requests in flight
        engine = connect_endpoint(endpoint, model, api_key, response_format, {
            "--ctx": ctx, "--gpu-layers": gpu_layers, "--threads": threads,
            "--chat-format": chat_format, **engine_flags.local_only()})
        model_label, draft_label = engine.info.name, None
    else:
        chosen = choose_model(model, settings, paths)
        if chosen is None:
            raise click.UsageError(no_model_message(paths))
        config = EngineConfig.from_settings(
            chosen.path, settings, context_size=min(n_ctx, 2048),
            gpu_layers=gpu_layers_option_value(gpu_layers), threads=threads,
            chat_format=chat_format, **engine_flags.engine_overrides(settings, paths.models_dir))
        engine = Engine.load(config)
        draft_label = draft_name(config.draft, paths.models_dir)
        if engine.info.n_ctx_train:
            n_ctx = min(n_ctx, engine.info.n_ctx_train)
        model_label = record_use(chosen, paths.models_dir, remember=save).name
    params = GenerationParams.from_settings(settings, max_tokens=max_tokens,
                                            temperature=temperature, top_p=top_p,
                                            reasoning_budget=reasoning_budget,
                                            answer_grammar=answer_grammar)
    options = BatchOptions(model_label=model_label, params=params, parallel=parallel,
                           n_ctx_per_sequence=n_ctx,
                           threads=threads or settings.threads,  # 0: measured free cores
                           system=system, seed=seed, draft_label=draft_label)
    out = open_output_for_append(output) if output else sys.stdout
    saver = _Saver(paths, engine, model_label, system) if save else None

    def write(record, _item) -> None:
        try:
            safe_write(out, json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise BatchOutputError(f"{output or 'stdout'}: cannot write: "
                                   f"{exc.strerror or exc}") from None

    progress = _Progress() if sys.stderr.isatty() else None
    try:
        with decoding(progress) as cancel, engine:
            summary = run_batch(engine, items, options, write, progress, cancel,
                                save=saver.save if saver else None)
    finally:
        if output:
            _close_quietly(out)
    summary.skipped = skipped
    safe_echo(summary.line(), err=True)
    if summary.failed:
        sys.exit(1)


_TEMPLATE_LIMIT = 1 << 20


def _read_template(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(_TEMPLATE_LIMIT + 1)  # bounded: /dev/zero is a "file" too
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}",
                                 param_hint="--template") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path}: not UTF-8 text", param_hint="--template") from None
    if len(text) > _TEMPLATE_LIMIT:
        raise click.BadParameter(f"{path}: larger than 1 MiB", param_hint="--template")
    return text


@contextlib.contextmanager
def decoding(progress) -> Iterator[threading.Event]:
    """Around a decode that shows `progress` (None: none) on stderr: the cancel event, set by
    Ctrl+C; the progress line cleared at the end, and before a lost RPC worker's line (printed
    from llama.cpp's thread)."""
    from localr1.engine import ggml_abort

    if progress:
        ggml_abort.set_before_abort(progress.clear)
    cancel = threading.Event()
    try:
        yield cancel
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        if progress:
            progress.clear()


def _close_quietly(out) -> None:
    # After a failed write the buffer still holds the record; closing would fail the same way
    # and hide the first error.
    with contextlib.suppress(OSError):
        out.close()


class _Progress:
    """One self-rewriting stderr line: done/total, tokens/s, ETA."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, summary, total: int) -> None:
        now = time.monotonic()
        finished = summary.done + summary.failed
        if now - self.last < 0.2 and finished < total:
            return
        self.last = now
        eta = ""
        if finished and summary.seconds > 0 and finished < total:
            remaining = summary.seconds / finished * (total - finished)
            eta = f", ETA {int(remaining // 60)}:{int(remaining % 60):02d}"
        sys.stderr.write(f"\r\x1b[K[{finished}/{total}] {summary.tokens_per_second:.1f} "
                         f"tokens/s{eta}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


class _Saver:
    """--save: each answered record becomes a conversation tagged with this batch's id, written
    by the same chat-turn code as `run` and the TUI."""

    def __init__(self, paths, engine, model_label: str, system: str | None) -> None:
        import uuid

        from localr1.chat_session import ChatSession
        from localr1.store import Store

        self.session = ChatSession(Store.open(paths.db_path), engine, model_label)
        self.system = system
        self.batch_id = f"batch-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def save(self, item, events) -> None:
        self.session.save_answered(
            item.messages, events, batch_id=self.batch_id,
            system_prompt=item.system if item.system is not None else self.system,
            metadata={"batch_id": self.batch_id, "record_id": item.id})
