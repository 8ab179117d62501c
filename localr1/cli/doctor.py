"""`localr1 doctor`: run the install checks (localr1.doctor) and print them, or their JSON."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import click

from localr1.cli.engine_options import EngineFlags, engine_options
from localr1.terminal_text import safe_write

if TYPE_CHECKING:
    from localr1.doctor import Check

_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option("-m", "--model", help="Also load this model and generate a few tokens, to "
              "confirm where it runs (e.g. how many layers are offloaded to the GPU).")
@click.option("--json", "json_output", is_flag=True, help="Print the checks as JSON.")
@engine_options
def doctor(model: str | None, json_output: bool, engine_flags: EngineFlags) -> None:
    """Check the install: llama.cpp build, GPU offload, RPC, memory, paths, config.

    --draft, --kv-type and the like apply to the --model test."""
    import json
    from dataclasses import asdict

    from localr1.doctor import check_model_runs, run_checks
    from localr1.paths import app_paths

    paths = app_paths()
    if not model and engine_flags.typed_settings():
        raise click.UsageError("--draft, --kv-type and the like need --model (they apply to "
                               "its test)")
    checks = run_checks(paths, model_given=bool(model))
    if model:
        checks.append(check_model_runs(model, paths, engine_flags.typed_settings()))
    if json_output:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print_report(checks)
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


def print_report(checks: list[Check], stream: TextIO | None = None) -> None:
    """One line per check, its advice indented under it."""
    stream = stream or sys.stdout
    width = max(len(c.name) for c in checks)
    for check in checks:
        safe_write(stream, f"{_MARKS[check.status]}  {check.name:<{width}}  {check.detail}\n")
        if check.advice:
            safe_write(stream, f"      {'':<{width}}  -> {check.advice}\n")
