"""`localr1 serve`: the OpenAI-compatible server (see localr1/serve/)."""

from __future__ import annotations

import click

from localr1.cli.engine_options import EngineFlags, engine_options
from localr1.cli.params import setting_check
from localr1.serve.responses import REASONING_FORMATS
from localr1.terminal_text import safe_echo


@click.command()
@click.option("-m", "--model", help="Model to load first (default: config's default_model).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than this machine needs --api-key.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("-p", "--parallel", type=click.IntRange(1, 64),
              help="Requests decoded at once (slots); more wait their turn. Default: 4 on a "
                   "CPU, 8 when llama.cpp can offload to a GPU.")
@click.option("--ctx", type=click.IntRange(min=64), callback=setting_check("context_size"),
              help="Context per request, in tokens (default: config's context_size).")
@click.option("--threads", type=click.IntRange(min=1), callback=setting_check("threads"))
@click.option("--gpu-layers", help="auto, all, 0 (CPU) or a count.")
@click.option("--chat-format", help="Prompt format for a GGUF without a usable template.")
@click.option("--api-key", envvar="LOCALR1_API_KEY",
              help="Require 'Authorization: Bearer KEY' (also LOCALR1_API_KEY).")
@click.option("--log/--no-log", default=False, show_default=True,
              help="Save each served chat in the history.")
@click.option("--no-swap", is_flag=True,
              help="Refuse requests for other models instead of loading them.")
@click.option("--reasoning-format", default="both", show_default=True,
              type=click.Choice(REASONING_FORMATS),
              help="Where the reasoning goes: reasoning_content and reasoning (both), one of "
                   "them, or <think> tags inline in content.")
@engine_options
def serve(model, host, port, parallel, ctx, threads, gpu_layers, chat_format, api_key, log,
          no_swap, reasoning_format, engine_flags: EngineFlags) -> None:
    """Serve the OpenAI chat-completions API (GET /v1/models, POST /v1/chat/completions,
    GET /health) with the reasoning split out.

    \b
      localr1 serve -m r1:7b
      curl localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "hi"}]}'
    """
    from localr1.cli.main import gpu_layers_option_value, no_model_message
    from localr1.config import load_settings
    from localr1.models.choice import choose_model, record_use
    from localr1.paths import app_paths
    from localr1.serve.server import ServeOptions, Server, default_parallel, exposed_without_key

    paths = app_paths()
    settings = engine_flags.settings_over(load_settings(paths.config_file))
    chosen = choose_model(model, settings, paths)
    if chosen is None:
        raise click.UsageError(no_model_message(paths))
    draft = engine_flags.engine_overrides(settings, paths.models_dir)["draft"]
    if api_key is not None and not api_key.strip():
        raise click.BadParameter("the key is empty", param_hint="--api-key")
    options = ServeOptions(
        host=host, port=port, parallel=parallel or default_parallel(),
        n_ctx_per_sequence=ctx or settings.context_size,
        threads=threads or settings.threads,  # 0: measured free cores
        gpu_layers=gpu_layers_option_value(gpu_layers), chat_format=chat_format,
        api_key=api_key, log=log, allow_swap=not no_swap, reasoning_format=reasoning_format,
        draft=draft)
    if exposed_without_key(options):
        safe_echo(f"warning: listening on {host} without --api-key: anyone who can reach this "
                  "machine can use the model", err=True)
    chosen = record_use(chosen, paths.models_dir, remember=log)
    server = Server(chosen, settings, paths, options)
    server.start_model()
    safe_echo(f"localr1 serve: {chosen.name} on http://{_url_host(host)}:{server.port}/v1 "
              f"({options.parallel} slots; Ctrl+C stops)", err=True)
    server.run()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
