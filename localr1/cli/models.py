"""`localr1 pull | list | show | rm | import`: the models on disk and on the Hub.

Thin, like cli/main.py: the work is in localr1.models (listing and pull_plan build what is
shown, for the TUI too); these commands print. `list` and `show` take `--rpc` like `run`: the
fit labels then count those workers (default: config.toml's `rpc`, which `pull` counts too).
Results go to stdout, progress and notes to stderr. Imports stay inside the commands so
`localr1 --help` stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from localr1.cli.engine_options import check_rpc
from localr1.terminal_text import safe_confirm, safe_echo

if TYPE_CHECKING:
    from localr1.models.catalog import Catalog, CatalogEntry
    from localr1.models.fit import MachineMemory, RpcWorkers
    from localr1.models.registry import InstalledModel

rpc_option = click.option(
    "--rpc", metavar="HOST:PORT[,HOST:PORT...]", callback=check_rpc,
    help="Count these `localr1 worker`s' free memory in the fit labels, as `run --rpc` would "
         "split the model (default: config's rpc), or `none` (this machine only).")


def _warn_workers(workers: RpcWorkers | None) -> None:
    """Why the fit labels count this machine alone, once, on stderr."""
    if workers is not None and workers.problem:
        safe_echo(f"localr1: {workers.problem}; the fit labels count this machine only",
                  err=True)


# ---- pull ------------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True,
              help="Do not ask before downloading a model that looks too large for this machine.")
def pull(name: str, yes: bool) -> None:
    """Download a model from the Hugging Face Hub, verified.

    NAME is a catalog name (r1, r1:7b, r1:14b-q8_0; see `localr1 list --available`),
    OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf. An interrupted pull resumes where it stopped.

    \b
      localr1 pull r1:7b
      localr1 pull bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF:Q6_K
    """
    from localr1.cli.pull_progress import PullProgressPrinter
    from localr1.models.download_errors import PullInterrupted
    from localr1.models.library import pull_model
    from localr1.models.pull_plan import plan_pull
    from localr1.paths import app_paths

    planned = plan_pull(name)
    plan = planned.plan
    if planned.warning:
        safe_echo(f"localr1: warning: {planned.warning}", err=True)
    _warn_workers(planned.fit.workers)
    safe_echo(f"{plan.name}: {plan.repo} ({planned.size_text}); {planned.fit_text}", err=True)
    if planned.too_large_question and not yes:
        safe_confirm(planned.too_large_question, err=True)
    printer = PullProgressPrinter()
    try:
        result = pull_model(plan, app_paths().models_dir, on_event=printer)
    except PullInterrupted as exc:
        printer.close()
        safe_echo(f"localr1: {exc}".replace("pull again", f"`localr1 pull {name}` again"),
                   err=True)
        sys.exit(130)
    finally:
        printer.close()
    if result.already_installed:
        known_as = f" as {result.model.name}" if result.model.name != plan.name else ""
        safe_echo(f"{plan.name} is already installed and verified{known_as}: "
                  f"{result.model.path}")
    else:
        safe_echo(f"pulled {plan.name}: {result.model.path}")
    tip = _draft_tip(result.model, app_paths().models_dir)
    if tip:
        safe_echo(tip, err=True)


def _draft_tip(model: InstalledModel, models_dir: Path) -> str | None:
    """The draft model to try with a Qwen R1 distill just pulled (models.draft_suggestion)."""
    from localr1.config import load_settings
    from localr1.models.catalog import load_catalog
    from localr1.models.draft_suggestion import suggest_draft
    from localr1.models.library import list_models as installed
    from localr1.paths import app_paths

    configured = load_settings(app_paths().config_file).draft_model
    suggestion = suggest_draft(model, load_catalog(), installed(models_dir), configured)
    return suggestion.cli_text if suggestion else None


# ---- list ------------------------------------------------------------------------------------


@click.command("list")
@click.option("--available", is_flag=True,
              help="List the catalog instead, marking what is installed and the quant "
                   "recommended for this machine (fits, and decodes at a usable speed).")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@rpc_option
def list_models(available: bool, json_output: bool, rpc: tuple[str, ...] | None) -> None:
    """List installed models (or, with --available, the catalog)."""
    from localr1.models.fit import machine_memory
    from localr1.models.listing import catalog_rows, installed_rows
    from localr1.paths import app_paths
    from localr1.sizes import format_bytes

    models_dir = app_paths().models_dir
    machine = None if rpc is None else machine_memory(rpc=rpc)  # None: rows probe config's
    if available:
        from localr1.models.catalog import load_catalog

        rows = catalog_rows(load_catalog(), models_dir, machine)
        headers = ("NAME", "SIZE", "PARAMS", "FIT", "SPEED", "NOTES")
        cells = [(r.name, format_bytes(r.entry.size_bytes), r.entry.model.parameters,
                  r.fit_label, r.fit.speed_text, r.notes) for r in rows]
    else:
        rows = installed_rows(models_dir, machine)
        headers = ("NAME", "SIZE", "QUANT", "PARAMS", "FIT", "SPEED", "LAST USED")
        cells = [(r.name, format_bytes(r.model.size_bytes), r.quant, r.parameters, r.fit_label,
                  r.speed, r.last_used) for r in rows]
    _warn_workers(next((row.fit.workers for row in rows if row.fit), None))
    if json_output:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
        return
    if not rows:
        safe_echo("no models installed; `localr1 list --available` shows what `localr1 pull` "
                   "can fetch, `localr1 import --scan` finds GGUFs other apps downloaded",
                   err=True)
        return
    _print_table(headers, cells)


def _print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        safe_echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


# ---- show ------------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@click.option("--hash", "compute_hash", is_flag=True,
              help="Compute the sha256 if it was never recorded (reads the whole file).")
@rpc_option
def show(name: str, json_output: bool, compute_hash: bool, rpc: tuple[str, ...] | None) -> None:
    """Show a model: path, sha256, GGUF metadata, chat template, fit (or its catalog entry)."""
    from localr1.models.catalog import load_catalog
    from localr1.models.fit import machine_memory
    from localr1.models.library import find_installed
    from localr1.paths import app_paths

    catalog = load_catalog()
    paths = app_paths()
    model = find_installed(name, paths.models_dir, catalog=catalog)
    machine = machine_memory() if rpc is None else machine_memory(rpc=rpc)
    _warn_workers(machine.workers)
    if model is None:
        entry = catalog.find(name)
        if entry is None:
            _raise_unknown(name, paths.models_dir, catalog)
        fields = _catalog_fields(entry, machine)
    else:
        fields = _installed_fields(model, machine, catalog, compute_hash)
    if json_output:
        click.echo(json.dumps(fields, indent=2))
        return
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        safe_echo(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")


def _raise_unknown(name: str, models_dir: Path, catalog: Catalog) -> NoReturn:
    from localr1.models.catalog import UnknownModelError, nearest_hint
    from localr1.models.library import list_models as installed

    names = [m.name for m in installed(models_dir)] + catalog.names()
    raise UnknownModelError(f"unknown model '{name}'{nearest_hint(name, names)}")


def _installed_fields(model: InstalledModel, machine: MachineMemory, catalog: Catalog,
                      compute_hash: bool) -> dict[str, Any]:
    from localr1.config import load_settings
    from localr1.engine.loading import format_note_from_file
    from localr1.models.decode_options import is_no_draft, kv_cache_facts
    from localr1.models.fit import (
        assess,
        default_context_size,
        label_and_speed,
        shape_from_summary,
    )
    from localr1.models.gguf_header import read_gguf_header
    from localr1.models.listing import format_parameters, last_used_text
    from localr1.paths import app_paths
    from localr1.sizes import format_bytes

    header = read_gguf_header(model.path)
    settings = load_settings(app_paths().config_file)
    summary = model.summary
    sha256 = model.sha256
    if sha256 is None and compute_hash and len(model.files) == 1:
        from localr1.models.part_writer import file_sha256

        sha256 = file_sha256(model.path)
    fit = assess(shape_from_summary(summary), default_context_size(), machine)
    entry = catalog.find(model.catalog_name) if model.catalog_name else None
    fields: dict[str, Any] = {
        "name": model.name,
        "path": str(model.path),
        "files": [str(f.path) for f in model.files] if len(model.files) > 1 else None,
        "size": format_bytes(model.size_bytes),
        "sha256": sha256 or ("per part: " + ", ".join(f.sha256 or "?" for f in model.files)
                             if len(model.files) > 1 else "not recorded (--hash computes it)"),
        "source": model.source + (f" ({model.repo})" if model.repo else ""),
        "architecture": summary.architecture,
        "parameters": f"{format_parameters(summary.parameter_count)} "
                      f"({summary.parameter_count:,})",
        "quant": summary.quant,
        "context_length": summary.context_length,
        "layers": summary.n_layers,
        "chat_template": chat_template_variant(header.chat_template),
        # None: its template, or the config's chat_format (as `run` resolves it)
        "prompt_format": format_note_from_file(model.path, header, settings.chat_format),
        # config.toml's decode options, shown when not the defaults
        "kv_cache": ", ".join(kv_cache_facts(settings.flash_attn, settings.kv_type)) or None,
        "draft": None if is_no_draft(settings.draft_model) else settings.draft_model,
        "fit": f"{label_and_speed(fit)} (about {format_bytes(fit.needed_bytes)} at "
               f"{fit.n_ctx} tokens)",
        "last_used": last_used_text(model.last_used),
    }
    if entry is not None:
        fields["license"] = entry.model.license
        fields["sampling"] = f"temperature {entry.model.temperature}, top_p {entry.model.top_p}"
    return {k: v for k, v in fields.items() if v is not None or k in ("quant", "context_length")}


def _catalog_fields(entry: CatalogEntry, machine: MachineMemory) -> dict[str, Any]:
    from localr1.models.fit import assess_catalog_entry, default_context_size, label_and_speed
    from localr1.sizes import format_bytes

    model = entry.model
    fit = assess_catalog_entry(entry, default_context_size(), machine)
    return {
        "name": entry.name,
        "installed": f"no (localr1 pull {entry.name})",
        "title": model.title,
        "based_on": model.based_on,
        "repo": entry.repo,
        "files": list(entry.files),
        "size": f"about {format_bytes(entry.size_bytes)}",
        "architecture": model.architecture,
        "parameters": model.parameters,
        "quant": entry.quant.quant,
        "context_length": model.context_length,
        "license": model.license,
        "sampling": f"temperature {model.temperature}, top_p {model.top_p}",
        "fit": f"{label_and_speed(fit)} (about {format_bytes(fit.needed_bytes)} at "
               f"{fit.n_ctx} tokens)",
    }


def chat_template_variant(template: str | None) -> str:
    """Which prompt format the GGUF's template is, in words."""
    if not template:
        return "none in the GGUF (inferred from the vocabulary when loaded)"
    if "<｜Assistant｜>" in template:
        if "<｜Assistant｜><think>" in template:
            return "DeepSeek-R1, think prefill (the prompt ends in <think>)"
        return "DeepSeek-R1, original (the model opens <think> itself)"
    if "<|im_start|>" in template:
        return "ChatML"
    if "<|start_header_id|>" in template:
        return "Llama 3"
    return f"other ({len(template)} characters)"


# ---- rm --------------------------------------------------------------------------------------


@click.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(name: str, yes: bool) -> None:
    """Remove an installed model: delete what `pull` downloaded, forget what was imported."""
    from localr1.models.catalog import load_catalog
    from localr1.models.library import find_installed, remove_model
    from localr1.paths import app_paths
    from localr1.sizes import format_bytes

    catalog = load_catalog()
    models_dir = app_paths().models_dir
    model = find_installed(name, models_dir, catalog=catalog)
    if model is None:
        entry = catalog.find(name)
        if entry is not None:
            from localr1.errors import ModelFileError

            raise ModelFileError(f"model '{entry.name}' is not installed")
        _raise_unknown(name, models_dir, catalog)
    what = f"delete {model.name} ({format_bytes(model.size_bytes)}, {model.path})" \
        if model.owned else f"forget {model.name} (imported; {model.path} stays on disk)"
    if not yes:
        safe_confirm(f"{what[0].upper()}{what[1:]}?", err=True)
    removed = remove_model(model, models_dir)
    if removed.deleted:
        safe_echo(f"deleted {model.name} ({format_bytes(model.size_bytes)} freed)")
    else:
        safe_echo(f"forgot {model.name}; {model.path} was left in place")


# ---- import ----------------------------------------------------------------------------------


@click.command("import")
@click.argument("path", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option("--name", help="Name to register it under (default: the file name).")
@click.option("--copy", is_flag=True, help="Copy the file into the models folder.")
@click.option("--scan", is_flag=True,
              help="Find GGUFs in the Hugging Face cache, LM Studio and Ollama, and register "
                   "them all (no copies).")
def import_models(path: str | None, name: str | None, copy: bool, scan: bool) -> None:
    """Register a GGUF already on disk (no copy by default), or --scan for them."""
    from localr1.models.library import import_found, import_model
    from localr1.models.scanners import scan_sources
    from localr1.paths import app_paths
    from localr1.sizes import format_bytes

    if scan == bool(path):
        raise click.UsageError("give a PATH to a .gguf file, or --scan")
    if scan:
        if name or copy:
            raise click.UsageError("--name and --copy go with a PATH, not with --scan")
        result = import_found(scan_sources())
        for model in result.imported:
            safe_echo(f"imported {model.name} ({model.source}, "
                       f"{format_bytes(model.size_bytes)}): {model.path}")
        for item, why in result.skipped:
            safe_echo(f"skipped {item.parts[0]}: {why}", err=True)
        safe_echo(f"{len(result.imported)} imported, {len(result.skipped)} skipped", err=True)
        return
    model = import_model(Path(path), name, copy=copy, models_dir=app_paths().models_dir)
    how = "copied into the models folder" if copy else "registered in place"
    safe_echo(f"imported {model.name} ({format_bytes(model.size_bytes)}, {how}): {model.path}")
