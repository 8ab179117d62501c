"""The `localr1` command line. Thin: every command calls the core and prints.

Imports stay lazy (inside commands) so `localr1 --help` loads neither llama_cpp nor textual.
"""

from __future__ import annotations

import os
import sys

import click

from localr1 import __version__
from localr1.cli.conversation_id import CONVERSATION_ID
from localr1.cli.endpoint_options import (
    answer_format,
    connect_endpoint,
    endpoint_options,
    json_schema_option,
)
from localr1.cli.engine_options import EngineFlags, engine_options
from localr1.cli.params import setting_check
from localr1.errors import LocalR1Error
from localr1.terminal_text import safe_echo


class _OneLineError(click.ClickException):
    """One of our errors: "Error: ..." on one line, exit 1, through the terminal-safe path."""

    def show(self, file=None) -> None:
        safe_echo(f"Error: {_one_line(self.format_message())}", err=True)


def _one_line(message: str) -> str:
    """`message` with its line breaks written as visible \\r and \\n: an error stays one line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class _Group(click.Group):
    """Turns our own errors into one line and exit 1 (click's usage errors keep exit 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LocalR1Error as exc:
            raise _OneLineError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(__version__, prog_name="localr1")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Local-first chat for DeepSeek-R1 distilled models. Without a command: `localr1 chat`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@cli.command()
@click.argument("conversation_id", type=CONVERSATION_ID, required=False)
@click.option("-m", "--model", help="Model name or path to a .gguf file (default: config).")
@endpoint_options
@engine_options
@click.pass_context
def chat(ctx: click.Context, conversation_id: int | None, model: str | None,
         endpoint: str | None, api_key: str | None, engine_flags: EngineFlags) -> None:
    """Chat in the terminal UI (optionally reopening CONVERSATION_ID).

    --draft, --kv-type and the like apply to conversations that do not set their own (F4)."""
    from localr1.tui.app import run_chat

    remote = connect_endpoint(endpoint, model, api_key, local_only=engine_flags.local_only()) \
        if endpoint is not None else None
    if engine_flags.draft is not None:  # a draft that is not there: one line, before the app
        from localr1.models.decode_options import resolve_draft
        from localr1.paths import app_paths

        resolve_draft(engine_flags.draft, app_paths().models_dir)
    code = run_chat(model, conversation_id, remote=remote,
                    typed_settings=engine_flags.typed_settings())
    if code:  # the app crashed (Textual printed why) or exited with a code
        ctx.exit(code)


def main() -> None:
    """The console script: every way out is an exit code and at most one line of error."""
    code = _exit_code()
    try:
        sys.stdout.flush()  # after an error, output may still wait for a stdout that is full
    except (OSError, ValueError):
        _silence_stdout()
    sys.exit(code)


def _exit_code() -> int:
    try:
        result = cli.main(prog_name="localr1", standalone_mode=False)
        sys.stdout.flush()  # a full disk or closed pipe shows here, not at interpreter exit
        return result if isinstance(result, int) else 0
    except _OneLineError as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # a group without its subcommand
        exc.show()  # the help, where and with the exit code click gives it
        return exc.exit_code
    except click.ClickException as exc:  # usage errors included: one line, not click's three
        message = _one_line(exc.format_message())
        ctx = exc.ctx if isinstance(exc, click.UsageError) else None
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        safe_echo(f"Error: {message}{hint}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
            safe_echo("localr1: interrupted", err=True)
            return 130
        safe_echo("localr1: cancelled", err=True)  # a confirmation declined, or stdin closed
        return 1
    except OSError as exc:  # writing our own output failed: /dev/full, a closed terminal
        _silence_stdout()
        where = f"{exc.filename}: " if exc.filename else ""
        safe_echo(f"localr1: {where}{exc.strerror or exc}", err=True)
        return 1
    except Exception as exc:
        if os.environ.get("LOCALR1_DEBUG", "") not in ("", "0"):
            raise
        safe_echo(f"localr1: internal error: {type(exc).__name__}: {exc} (LOCALR1_DEBUG=1 "
                  "shows the traceback)", err=True)
        return 1


def _silence_stdout() -> None:
    # Whatever is still buffered for a stdout that cannot take it goes to /dev/null, so the
    # interpreter's last flush has nothing to complain about.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


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
@click.option("--max-tokens", type=click.IntRange(min=0), callback=setting_check("max_tokens"),
              help="Most tokens to generate, reasoning included (0 = until the context is "
              "full).")
@click.option("--temperature", type=click.FloatRange(0, 5), callback=setting_check("temperature"),
              help="Default 0.6 (DeepSeek's).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
              callback=setting_check("top_p"), help="Default 0.95.")
@click.option("--top-k", type=click.IntRange(min=0), callback=setting_check("top_k"),
              help="Default 0 (off).")
@click.option("--min-p", type=click.FloatRange(0, 1, max_open=True),
              callback=setting_check("min_p"), help="Default 0 (off).")
@click.option("--seed", type=int, callback=setting_check("seed"),
              help="Seed for reproducible sampling.")
@click.option("--ctx", type=click.IntRange(min=64), callback=setting_check("context_size"),
              help="Context window in tokens.")
@click.option("--gpu-layers", callback=_gpu_layers, help="auto, all, 0 (CPU) or a count.")
@click.option("--threads", type=click.IntRange(min=1), callback=setting_check("threads"),
              help="CPU threads.")
@click.option("--reasoning-budget", type=click.IntRange(min=-1),
              callback=setting_check("reasoning_budget"),
              help="Close the think block after N reasoning tokens (-1 = unlimited).")
@click.option("--chat-format", help="Prompt format when the GGUF has no (good) template, "
              "e.g. deepseek-r1, chatml, llama-3.")
@click.option("--hide-reasoning", is_flag=True, help="Do not print the reasoning.")
@click.option("--json", "json_output", is_flag=True,
              help="Print one JSON object: model, reasoning, answer, usage, timings.")
@click.option("-c", "--continue", "continue_latest", is_flag=True,
              help="Continue the latest conversation (its history goes to the model).")
@click.option("--cid", type=CONVERSATION_ID, help="Continue the conversation with this id.")
@click.option("--no-log", is_flag=True, help="Do not save this turn in the history.")
@json_schema_option
@endpoint_options
@engine_options
def run(prompt: tuple[str, ...], model: str | None, system: str | None, max_tokens, temperature,
        top_p, top_k, min_p, seed, ctx, gpu_layers, threads, reasoning_budget, chat_format,
        hide_reasoning: bool, json_output: bool, continue_latest: bool, cid: int | None,
        no_log: bool, json_schema, endpoint: str | None, api_key: str | None,
        engine_flags: EngineFlags) -> None:
    """Answer PROMPT (and/or text piped on stdin) with a local model (or a server's:
    --endpoint).

    The answer streams to stdout and the reasoning to stderr. Every turn is saved in the
    history (see `localr1 history`) unless --no-log.

    \b
      localr1 run -m model.gguf "Why is the sky blue?"
      git diff | localr1 run -m model.gguf "Write a commit message" --hide-reasoning
      localr1 run -c "And in one sentence?"
    """
    from localr1.cli.turn_printer import TurnPrinter
    from localr1.config import load_settings
    from localr1.engine import ggml_abort
    from localr1.engine.llama_engine import Engine, EngineConfig, GenerationParams
    from localr1.models.choice import choose_model, record_use
    from localr1.models.decode_options import draft_name
    from localr1.paths import app_paths
    from localr1.store.params import turn_sampling

    if no_log and (continue_latest or cid is not None):
        raise click.UsageError("--no-log cannot continue a conversation (-c/--cid)")
    if continue_latest and cid is not None:
        raise click.UsageError("use either -c or --cid, not both")
    text, title = _prompt_text(tuple(_argv_text(word) for word in prompt))
    system = _argv_text(system) if system is not None else None
    paths = app_paths()
    settings = load_settings(paths.config_file)
    store = None if no_log else _open_store(paths)
    conversation = _conversation_to_continue(store, continue_latest, cid)
    answer_grammar, response_format = answer_format(json_schema)
    if endpoint is not None:
        engine = connect_endpoint(endpoint, model, api_key, response_format, {
            "--ctx": ctx, "--gpu-layers": gpu_layers, "--threads": threads,
            "--chat-format": chat_format, **engine_flags.local_only()})
        model_label, draft_label = engine.info.name, None
    else:
        chosen = choose_model(model, settings, paths,
                              conversation_model=conversation.model if conversation else None)
        if chosen is None:
            raise click.UsageError(no_model_message(paths))
        config = EngineConfig.from_settings(
            chosen.path, settings, context_size=ctx, gpu_layers=gpu_layers, threads=threads,
            chat_format=chat_format, **engine_flags.engine_overrides(settings, paths.models_dir))
        engine = Engine.load(config)
        model_label = record_use(chosen, paths.models_dir, remember=store is not None).name
        draft_label = draft_name(config.draft, paths.models_dir)
    sampling = turn_sampling(conversation.params if conversation is not None else {},
                             _typed(dict(max_tokens=max_tokens, temperature=temperature,
                                         top_p=top_p, top_k=top_k, min_p=min_p, seed=seed,
                                         reasoning_budget=reasoning_budget)))
    params = GenerationParams.from_settings(settings, answer_grammar=answer_grammar, **sampling)
    printer = TurnPrinter(show_reasoning=not hide_reasoning, json_output=json_output,
                          remote=endpoint is not None, draft=draft_label)
    # A lost RPC worker ends the process from llama.cpp's thread: its line must start a line.
    ggml_abort.set_before_abort(lambda: (printer.err.end_line(), printer.out.end_line()))
    if engine.info.format_note:
        printer.note(engine.info.format_note)
    with engine:
        for event in _turn_events(engine, store, conversation, model_label, text, system,
                                  params, title=title):
            printer.handle(event)
    if json_output:
        safe_echo(printer.as_json(model_label, conversation_id=printer.conversation_id,
                                  params=params, placement=engine.info.placement))
    if not printer.result.answer.strip():
        stats = printer.result.stats
        why = "it stopped while still reasoning" if stats and stats.reasoning_truncated \
            else f"finish reason: {stats.finish_reason if stats else 'unknown'}"
        raise LocalR1Error(f"the model gave no answer ({why})")


def no_model_message(paths) -> str:
    return f"no model: pass --model NAME|PATH or set default_model in {paths.config_file}"


def _open_store(paths):
    from localr1.store import Store

    return Store.open(paths.db_path)


def _typed(flags: dict) -> dict:
    """The flags typed on the command line: they win over a continued conversation's."""
    source = click.get_current_context().get_parameter_source
    return {name: value for name, value in flags.items()
            if source(name) is click.core.ParameterSource.COMMANDLINE}


def _argv_text(text: str) -> str:
    """Command-line text whose bytes were not UTF-8 (Python keeps them as lone surrogates,
    which nothing can encode) with U+FFFD for those bytes, as piped text gets."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made
        return text.encode("utf-8", "replace").decode("utf-8")


def _conversation_to_continue(store, continue_latest: bool, cid: int | None):
    if store is None or not (continue_latest or cid is not None):
        return None
    if cid is None:
        cid = store.latest_conversation_id()
        if cid is None:
            raise LocalR1Error("no conversation to continue yet; run without -c first")
    return store.conversation(cid)


def _turn_events(engine, store, conversation, model_label: str, text: str,
                 system: str | None, params, *, title: str | None = None):
    """The engine's events for one turn, saved to the store unless logging is off."""
    from localr1.chat_message import ChatMessage

    if store is None:
        yield from engine.stream_chat([ChatMessage("user", text)], params, system_prompt=system)
        return
    from localr1.chat_session import ChatSession

    session = ChatSession(store, engine, model_label)
    if conversation is None:
        # --json-schema shapes this turn only: its grammar is no setting to keep.
        conversation = session.new_conversation(
            system_prompt=system, params=params)
        if title is not None:
            store.rename(conversation.id, title)
    elif system and system != conversation.system_prompt:
        store.set_system_prompt(conversation.id, system)  # the flag wins, from now on
    yield from session.send(conversation.id, text, params)


def _prompt_text(words: tuple[str, ...]) -> tuple[str, str | None]:
    """stdin first, then the arguments, like `llm`, and the new conversation's title when it
    is not the text's first line: the arguments, when text was piped too (`git diff | localr1
    run "Write a commit message"`). Blank text is never sent."""
    from localr1.store.records import title_from_text

    parts = []
    if sys.stdin is not None and not sys.stdin.isatty():
        # Bytes that are not UTF-8 become U+FFFD instead of stopping the run.
        piped = sys.stdin.buffer.read().decode("utf-8", errors="replace")
        if piped.strip():
            parts.append(piped.strip())
    typed = " ".join(words)
    if typed.strip():
        parts.append(typed)
    if not parts:
        raise click.UsageError("no prompt: give it as arguments or pipe it on stdin"
                               if not words else "the prompt is empty")
    title = title_from_text(typed) if len(parts) == 2 else None
    return "\n\n".join(parts), title


# ---- config --------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Where the config lives and what it says."""


@config.command("path")
def config_path() -> None:
    """Print the config file's path."""
    from localr1.paths import app_paths

    safe_echo(app_paths().config_file)


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
    safe_echo(f"# {paths.config_file}{exists}")
    safe_echo(render_settings_toml(settings), nl=False)
    safe_echo("\n# paths")
    for name, value in paths.as_dict().items():
        safe_echo(f"# {name} = {value}")


def _register_command_groups() -> None:
    # Commands that live in their own modules; each imports only click at import time.
    from localr1.cli.batch import batch
    from localr1.cli.doctor import doctor
    from localr1.cli.eval import eval_command
    from localr1.cli.history import history
    from localr1.cli.models import import_models, list_models, pull, rm, show
    from localr1.cli.serve import serve
    from localr1.cli.worker import worker

    cli.add_command(history)
    cli.add_command(batch)
    cli.add_command(doctor)
    cli.add_command(pull)
    cli.add_command(list_models)
    cli.add_command(list_models, "ls")
    cli.add_command(show)
    cli.add_command(rm)
    cli.add_command(import_models)
    cli.add_command(serve)
    cli.add_command(eval_command)
    cli.add_command(worker)


_register_command_groups()
