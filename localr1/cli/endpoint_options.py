"""Options `run`, `batch` and `chat` share for answers from elsewhere or in a set shape:
`--endpoint URL` / `--api-key` (an OpenAI-compatible server instead of a local GGUF) and
`--json-schema FILE` (an answer that is JSON following the schema, after the reasoning)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from localr1.engine.remote_engine import RemoteEngine

F = TypeVar("F", bound=Callable[..., Any])


def endpoint_options(command: F) -> F:
    """--endpoint and --api-key."""
    command = click.option(
        "--api-key",
        help="Key for --endpoint, sent as a bearer token (default: $OPENAI_API_KEY, sent "
             "only to https or loopback endpoints).")(command)
    return click.option(
        "--endpoint", metavar="URL",
        help="Use an OpenAI-compatible server (llama-server, Ollama, vLLM, localr1 serve), "
             "e.g. http://127.0.0.1:8080/v1; --model names its model (default: the "
             "first it lists).")(command)


def json_schema_option(command: F) -> F:
    return click.option(
        "--json-schema", "json_schema", metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Answer with JSON that follows this JSON Schema (the reasoning stays free).")(
        command)


def answer_format(schema_file: Path | None) -> tuple[str | None, dict[str, Any] | None]:
    """(the answer grammar for a local model, the response_format for an endpoint) of a
    --json-schema file; AnswerFormatError (one line, exit 1) for a file that is no schema."""
    if schema_file is None:
        return None, None
    from localr1.engine.answer_format import json_schema_grammar, read_schema_file
    from localr1.engine.openai_wire import schema_response_format

    schema = read_schema_file(schema_file)  # once: a FIFO or <(echo ...) cannot be reread
    return json_schema_grammar(schema), schema_response_format(schema)


def connect_endpoint(url: str, model: str | None, api_key: str | None,
                     response_format: dict[str, Any] | None = None,
                     local_only: dict[str, Any] | None = None) -> RemoteEngine:
    """The engine for --endpoint. `local_only`: options given that only a local model takes
    (--ctx, --gpu-layers...), refused as bad usage."""
    given = [name for name, value in (local_only or {}).items() if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)} cannot be used with --endpoint "
                               "(the server runs the model)")
    from localr1.engine.remote_engine import RemoteEngine

    # Read here, not as the option's envvar: a key from the environment may only go to
    # https or loopback servers, an explicit one goes wherever it is told.
    return RemoteEngine.connect(url, model, api_key, env_api_key=os.environ.get("OPENAI_API_KEY"),
                                response_format=response_format)
