"""The rows of the model lists, as data: installed models and the catalog, with fit labels,
estimated speeds and "last used", that `localr1 list` (and its --json) and the TUI's models
screen both render.

Listing reads the registry (no multi-GB header reads for registered models) and probes this
machine's memory once for all the fit labels. The fits are for config.toml's context_size and
kv_type, count its draft_model beside each model when that one is installed, and its RPC
workers' free memory (`rpc`) when they answer (fit.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localr1.config import Settings
from localr1.durations import format_age
from localr1.errors import LocalR1Error
from localr1.models import fit
from localr1.models.catalog import Catalog, CatalogEntry, load_catalog
from localr1.models.decode_options import LOOKUP, is_no_draft
from localr1.models.draft_suggestion import DraftSuggestion, suggest_draft
from localr1.models.library import (
    build_model,
    find_installed,
    is_missing,
    list_models,
    names_a_path,
)
from localr1.models.registry import InstalledModel
from localr1.models.split_names import part_paths

FILE_MISSING = "file missing"


@dataclass(frozen=True)
class InstalledRow:
    model: InstalledModel
    fit: fit.Fit | None  # None: a file of the model is gone
    last_used: str  # "never", "just now", "5 min ago"
    draft_tip: DraftSuggestion | None = None  # the draft model that would speed it up

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def fit_label(self) -> str:
        return FILE_MISSING if self.fit is None else self.fit.label_text

    @property
    def speed(self) -> str:
        return "-" if self.fit is None else self.fit.speed_text

    @property
    def quant(self) -> str:
        return self.model.summary.quant or "?"

    @property
    def parameters(self) -> str:
        return format_parameters(self.model.summary.parameter_count)

    def to_json(self) -> dict[str, Any]:
        model, summary = self.model, self.model.summary
        return {"name": model.name, "path": str(model.path), "size_bytes": model.size_bytes,
                "quant": summary.quant, "parameters": summary.parameter_count,
                "architecture": summary.architecture, "context_length": summary.context_length,
                "fit": FILE_MISSING if self.fit is None else self.fit.label,
                "needed_bytes": self.fit.needed_bytes if self.fit else None,
                "draft_bytes": self.fit.draft_bytes if self.fit else None,
                "workers": workers_json(self.fit.workers) if self.fit else None,
                "tokens_per_second": _rounded(self.fit.tokens_per_second if self.fit else None),
                "last_used": _iso(model.last_used), "source": model.source, "repo": model.repo,
                "sha256": model.sha256, "files": [str(f.path) for f in model.files]}


@dataclass(frozen=True)
class CatalogRow:
    entry: CatalogEntry
    fit: fit.Fit
    also: tuple[str, ...]  # other names for it: "r1:1.5b", "r1"
    installed: bool
    recommended: bool  # the quant to suggest for this machine

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def title(self) -> str:
        return self.entry.model.title

    @property
    def fit_label(self) -> str:
        return self.fit.label_text

    @property
    def notes(self) -> str:
        notes = [f"= {', '.join(self.also)}"] if self.also else []
        notes += ["installed"] if self.installed else []
        notes += ["recommended"] if self.recommended else []
        return "  ".join(notes)

    def to_json(self) -> dict[str, Any]:
        entry, model = self.entry, self.entry.model
        return {"name": entry.name, "model": model.name, "quant": entry.quant.quant,
                "also": list(self.also), "repo": entry.repo, "files": list(entry.files),
                "size_bytes": entry.size_bytes, "parameters": model.parameters,
                "architecture": model.architecture, "context_length": model.context_length,
                "license": model.license, "fit": self.fit.label,
                "needed_bytes": self.fit.needed_bytes, "draft_bytes": self.fit.draft_bytes,
                "workers": workers_json(self.fit.workers),
                "tokens_per_second": _rounded(self.fit.tokens_per_second),
                "installed": self.installed,
                "recommended": self.recommended}


def workers_json(workers: fit.RpcWorkers | None) -> dict[str, Any] | None:
    """The RPC workers a fit counted (or could not), for --json; None: none configured."""
    if workers is None:
        return None
    return {"endpoints": list(workers.endpoints), "counted": workers.counted,
            "free_bytes": sum(workers.device_free), "problem": workers.problem}


def installed_rows(models_dir: Path, machine: fit.MachineMemory | None = None,
                   now: float | None = None) -> list[InstalledRow]:
    """Every installed model, registered ones first, with its fit here (`machine`, default
    this machine and config's RPC workers) and its last use."""
    models = list_models(models_dir)
    if not models:
        return []
    machine = machine or fit.machine_memory()
    settings = _settings()
    try:
        catalog = load_catalog()
    except LocalR1Error:
        catalog = None  # no draft tips; the catalog list says why
    draft = configured_draft(settings.draft_model, models_dir, catalog)
    now = time.time() if now is None else now
    rows = []
    for model in models:
        counted = draft.shape if draft and draft.model_name != model.name else None
        assessed = None if is_missing(model) else fit.assess(
            fit.shape_from_summary(model.summary), settings.context_size, machine,
            kv_type=settings.kv_type, draft=counted)
        tip = suggest_draft(model, catalog, models, settings.draft_model) if catalog else None
        rows.append(InstalledRow(model, assessed, last_used_text(model.last_used, now), tip))
    return rows


def catalog_rows(catalog: Catalog, models_dir: Path, machine: fit.MachineMemory | None = None,
                 installed: list[InstalledModel] | None = None) -> list[CatalogRow]:
    """Every catalog entry with its fit here, its other names, and whether it is installed
    (`installed`: the models already listed, to save listing them again)."""
    from localr1.models.hub_resolve import local_path

    machine = machine or fit.machine_memory()
    settings = _settings()
    n_ctx, kv_type = settings.context_size, settings.kv_type
    draft = configured_draft(settings.draft_model, models_dir, catalog)
    entries = catalog.entries()
    recommended = fit.recommended_entries(entries, n_ctx, machine, kv_type=kv_type, draft=draft)
    if installed is None:
        installed = list_models(models_dir)
    on_disk = {m.catalog_name or m.name for m in installed}
    aliases: dict[str, list[str]] = {}
    for alias, target in catalog.aliases:
        found = catalog.find(target)
        if found:
            aliases.setdefault(found.name, []).append(alias)
    rows = []
    for entry in entries:
        here = entry.name in on_disk or \
            local_path(models_dir, entry.repo, entry.files[0]).is_file()
        also = ([entry.model.name] if entry.is_default_quant else []) + \
            aliases.get(entry.name, [])
        assessed = fit.assess_catalog_entry(entry, n_ctx, machine, kv_type=kv_type, draft=draft)
        rows.append(CatalogRow(entry, assessed, tuple(also), here, entry.name in recommended))
    return rows


def configured_draft(draft_model: str | None, models_dir: Path,
                     catalog: Catalog | None = None) -> fit.ConfiguredDraft | None:
    """config.toml's draft_model when it names a model on disk (an installed name, or a GGUF
    path); None for none, "lookup" (no second model) or one not there (loading says why)."""
    if is_no_draft(draft_model) or draft_model.strip().lower() == LOOKUP:
        return None
    try:
        model = find_installed(draft_model, models_dir, catalog=catalog)
        path = Path(draft_model).expanduser()
        if model is None and names_a_path(draft_model) and path.is_file():
            model = build_model(path.stem, part_paths(path), source="import", owned=False)
    except (LocalR1Error, OSError):
        return None  # unreadable: the fit goes without the draft, loading will say why
    if model is None or is_missing(model):
        return None
    return fit.ConfiguredDraft(fit.shape_from_summary(model.summary), model.name,
                               model.catalog_name)


def _settings() -> Settings:
    from localr1.config import load_settings
    from localr1.paths import app_paths

    return load_settings(app_paths().config_file)


def last_used_text(when: float | None, now: float | None = None) -> str:
    if when is None:
        return "never"
    return format_age(max(0.0, (time.time() if now is None else now) - when))


def format_parameters(count: int) -> str:
    """19_500_000 -> '19.5M', 7_615_616_512 -> '7.6B'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def _rounded(tokens_per_second: float | None) -> float | None:
    return None if tokens_per_second is None else round(tokens_per_second, 1)


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when))
