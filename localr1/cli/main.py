"""The `localr1` command line. Thin: every command calls the core and prints.

Imports stay lazy (inside commands) so `localr1 --help` loads neither llama_cpp nor textual.
"""

from __future__ import annotations

import sys

import click

from localr1 import __version__
from localr1.errors import LocalR1Error


class _Group(click.Group):
    """Turns our own errors into one line and exit 1 (click's usage errors keep exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LocalR1Error as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(__version__, prog_name="localr1")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Local-first chat for DeepSeek-R1 distilled models. Without a command: `localr1 chat`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@cli.command()
@click.argument("conversation_id", type=int, required=False)
@click.option("-m", "--model", help="Model name or path to a .gguf file (default: config).")
def chat(conversation_id: int | None, model: str | None) -> None:
    """Chat in the terminal UI (optionally reopening CONVERSATION_ID)."""
    from localr1.tui.app import run_chat

    run_chat(model, conversation_id)


def main() -> None:
    try:
        cli(prog_name="localr1")
    except KeyboardInterrupt:
        click.echo("\nlocalr1: interrupted", err=True)
        sys.exit(130)


# ---- run -----------------------------------------------------------------------------------


def gpu_layers_option_value(value: str | None) -> int | str | None:
    """--gpu-layers: auto, all, 0 or a count (click.BadParameter otherwise)."""
    if value is None:
        return None
    from localr1.config import parse_gpu_layers

    try:
        return parse_gpu_layers(value)
    except ValueError:
        raise click.BadParameter("use auto, all, 0 (CPU) or a layer count",
                                 param_hint="--gpu-layers") from None


def _gpu_layers(_ctx, _param, value: str | None):
    return gpu_layers_option_value(value)


@cli.command()
@click.argument("prompt", nargs=-1)
@click.option("-m", "--model", help="Model name or path to a .gguf file (default: config).")
@click.option("-s", "--system", help="System prompt (folded into the first user turn for R1).")
@click.option("--max-tokens", type=click.IntRange(min=0), help="Most tokens to generate, "
              "reasoning included (0 = until the context is full).")
@click.option("--temperature", type=click.FloatRange(0, 5), help="Default 0.6 (DeepSeek's).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), help="Default 0.95.")
@click.option("--top-k", type=click.IntRange(min=0), help="Default 0 (off).")
@click.option("--min-p", type=click.FloatRange(0, 1, max_open=True), help="Default 0 (off).")
@click.option("--seed", type=int, help="Seed for reproducible sampling.")
@click.option("--ctx", type=click.IntRange(min=64), help="Context window in tokens.")
@click.option("--gpu-layers", callback=_gpu_layers, help="auto, all, 0 (CPU) or a count.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads.")
@click.option("--reasoning-budget", type=click.IntRange(min=-1),
              help="Close the think block after N reasoning tokens (-1 = unlimited).")
@click.option("--chat-format", help="Prompt format when the GGUF has no (good) template, "
              "e.g. deepseek-r1, chatml, llama-3.")
@click.option("--hide-reasoning", is_flag=True, help="Do not print the reasoning.")
@click.option("--json", "json_output", is_flag=True,
              help="Print one JSON object: model, reasoning, answer, usage, timings.")
@click.option("-c", "--continue", "continue_latest", is_flag=True,
              help="Continue the latest conversation (its history goes to the model).")
@click.option("--cid", type=int, help="Continue the conversation with this id.")
@click.option("--no-log", is_flag=True, help="Do not save this turn in the history.")
def run(prompt: tuple[str, ...], model: str | None, system: str | None, max_tokens, temperature,
        top_p, top_k, min_p, seed, ctx, gpu_layers, threads, reasoning_budget, chat_format,
        hide_reasoning: bool, json_output: bool, continue_latest: bool, cid: int | None,
        no_log: bool) -> None:
    """Answer PROMPT (and/or text piped on stdin) with a local model.

    The answer streams to stdout and the reasoning to stderr. Every turn is saved in the
    history (see `localr1 history`) unless --no-log.

    \b
      localr1 run -m model.gguf "Why is the sky blue?"
      git diff | localr1 run -m model.gguf "Write a commit message" --hide-reasoning
      localr1 run -c "And in one sentence?"
    """
    from localr1.cli.turn_printer import TurnPrinter
    from localr1.config import load_settings
    from localr1.engine.llama_engine import Engine, EngineConfig, GenerationParams
    from localr1.models.library import mark_used, resolve_model
    from localr1.paths import app_paths

    if no_log and (continue_latest or cid is not None):
        raise click.UsageError("--no-log cannot continue a conversation (-c/--cid)")
    if continue_latest and cid is not None:
        raise click.UsageError("use either -c or --cid, not both")
    text = _prompt_text(prompt)
    paths = app_paths()
    settings = load_settings(paths.config_file)
    store = None if no_log else _open_store(paths)
    conversation = _conversation_to_continue(store, continue_latest, cid)
    reference = model or (conversation.model if conversation else None) \
        or settings.default_model
    if not reference:
        raise click.UsageError("no model: pass --model NAME|PATH or set default_model in "
                               f"{paths.config_file}")
    model_path = resolve_model(reference, paths.models_dir)
    engine = Engine.load(EngineConfig.from_settings(
        model_path, settings, context_size=ctx, gpu_layers=gpu_layers, threads=threads,
        chat_format=chat_format))
    mark_used(model_path)
    params = GenerationParams.from_settings(
        settings, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        min_p=min_p, seed=seed, reasoning_budget=reasoning_budget)
    printer = TurnPrinter(show_reasoning=not hide_reasoning, json_output=json_output)
    with engine:
        for event in _turn_events(engine, store, conversation, reference, text, system, params):
            printer.handle(event)
    if json_output:
        click.echo(printer.as_json(reference, conversation_id=printer.conversation_id))
    if not printer.result.answer.strip():
        stats = printer.result.stats
        why = "it stopped while still reasoning" if stats and stats.reasoning_truncated \
            else f"finish reason: {stats.finish_reason if stats else 'unknown'}"
        raise LocalR1Error(f"the model gave no answer ({why})")


def _open_store(paths):
    from localr1.store.database import Store

    return Store.open(paths.db_path)


def _conversation_to_continue(store, continue_latest: bool, cid: int | None):
    if store is None or not (continue_latest or cid is not None):
        return None
    if cid is None:
        cid = store.latest_conversation_id()
        if cid is None:
            raise LocalR1Error("no conversation to continue yet; run without -c first")
    return store.conversation(cid)


def _turn_events(engine, store, conversation, model_label: str, text: str,
                 system: str | None, params):
    """The engine's events for one turn, saved to the store unless logging is off."""
    from localr1.chat_message import ChatMessage

    if store is None:
        yield from engine.stream_chat([ChatMessage("user", text)], params, system_prompt=system)
        return
    from localr1.chat_session import ChatSession

    session = ChatSession(store, engine, model_label)
    if conversation is None:
        conversation = session.new_conversation(system_prompt=system, params=params)
    elif system and system != conversation.system_prompt:
        raise click.UsageError("--system cannot change a continued conversation's system "
                               "prompt; start a new conversation")
    yield from session.send(conversation.id, text, params)


def _prompt_text(words: tuple[str, ...]) -> str:
    """stdin first, then the arguments, like `llm`."""
    parts = []
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped.strip():
            parts.append(piped.strip())
    if words:
        parts.append(" ".join(words))
    if not parts:
        raise click.UsageError("no prompt: give it as arguments or pipe it on stdin")
    return "\n\n".join(parts)


# ---- doctor --------------------------------------------------------------------------------


@cli.command()
@click.option("-m", "--model", help="Also load this model and generate a few tokens, to "
              "confirm where it runs (e.g. how many layers are offloaded to the GPU).")
@click.option("--json", "json_output", is_flag=True, help="Print the checks as JSON.")
def doctor(model: str | None, json_output: bool) -> None:
    """Check the install: llama.cpp build, GPU offload, memory, paths, config."""
    import json
    from dataclasses import asdict

    from localr1.doctor import check_model_runs, print_report, run_checks
    from localr1.paths import app_paths

    paths = app_paths()
    checks = run_checks(paths)
    if model:
        checks.append(check_model_runs(model, paths))
    if json_output:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print_report(checks)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


# ---- config --------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Where the config lives and what it says."""


@config.command("path")
def config_path() -> None:
    """Print the config file's path."""
    from localr1.paths import app_paths

    click.echo(app_paths().config_file)


@config.command("show")
@click.option("--json", "json_output", is_flag=True, help="Print settings and paths as JSON.")
def config_show(json_output: bool) -> None:
    """Print the effective settings (defaults plus config.toml) and the paths in use."""
    import json

    from localr1.config import load_settings, render_settings_toml
    from localr1.paths import app_paths

    paths = app_paths()
    settings = load_settings(paths.config_file)
    if json_output:
        click.echo(json.dumps({"settings": settings.as_dict(), "paths": paths.as_dict()},
                              indent=2))
        return
    exists = "" if paths.config_file.exists() else " (not created; defaults)"
    click.echo(f"# {paths.config_file}{exists}")
    click.echo(render_settings_toml(settings), nl=False)
    click.echo("\n# paths")
    for name, value in paths.as_dict().items():
        click.echo(f"# {name} = {value}")


def _register_command_groups() -> None:
    # Commands that live in their own modules; each imports only click at import time.
    from localr1.cli.batch import batch
    from localr1.cli.history import history
    from localr1.cli.models import import_models, list_models, pull, rm, show

    cli.add_command(history)
    cli.add_command(batch)
    cli.add_command(pull)
    cli.add_command(list_models)
    cli.add_command(list_models, "ls")
    cli.add_command(show)
    cli.add_command(rm)
    cli.add_command(import_models)


_register_command_groups()
