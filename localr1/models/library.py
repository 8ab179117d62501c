"""The models on disk: resolve what the user typed, register, list, remove, import, pull.

`--model` accepts a path to a .gguf file, the name of an installed model (pulled, imported, or a
GGUF dropped into the models folder: its file name with or without `.gguf`), or a catalog name
(`r1:7b`; if it is not installed the message says to pull it). Unknown names get the nearest
matches in the message. `names_a_path` is the one rule for telling them apart: a bare word is a
model name first, so a `gemma` folder in the working directory cannot hide the model `gemma`.

Every GGUF is validated before it is registered (magic, version, and that the tensor data fits
in each part: a truncated download fails here, not inside llama.cpp); a pulled file that fails
is deleted. What we write (pull, import --copy) stays inside the models folder.
"""

from __future__ import annotations

import os
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localr1.errors import ModelFileError
from localr1.models.gguf_header import GGUFHeader, read_gguf_header
from localr1.models.registry import GGUFSummary, InstalledModel, ModelFile, ModelRegistry
from localr1.models.split_names import is_later_part, model_name, part_paths
from localr1.terminal_text import visible_controls

if TYPE_CHECKING:
    from localr1.models.catalog import Catalog
    from localr1.models.hub_download import DownloadedFile, DownloadOptions
    from localr1.models.hub_resolve import PullPlan
    from localr1.models.pull_events import OnEvent
    from localr1.models.scanners import FoundModel



def installed_models(models_dir: Path) -> dict[str, Path]:
    """Installed GGUFs by name (file stem), searched recursively under the models folder."""
    if not models_dir.is_dir():
        return {}
    return {path.stem: path for path in sorted(models_dir.rglob("*.gguf")) if path.is_file()}


# ---- resolving what the user typed -----------------------------------------------------------


def names_a_path(reference: str) -> bool:
    """Whether what the user typed is a path before it is a model name: it has a slash (or
    the OS's separator), starts with `~`, or ends in `.gguf`. A bare word names an installed
    or catalog model, and is taken as a file in the working directory only when no model has
    that name. Every front end resolves through `resolve_model`/`find_installed`, which
    apply this rule."""
    separators = {"/", os.sep, os.altsep or "/"}
    return any(s in reference for s in separators) or reference.startswith("~") or \
        reference.lower().endswith(".gguf")


def _existing_file(path: Path) -> Path:
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a GGUF file")
    return path  # a FIFO or a symlink loop too: read_gguf_header says what it is


def resolve_model(reference: str, models_dir: Path, *, registry: ModelRegistry | None = None,
                  catalog: Catalog | None = None) -> Path:
    """The GGUF to load for `reference`: a path, an installed name, or a catalog name, told
    apart by `names_a_path`."""
    path = Path(reference).expanduser()
    if names_a_path(reference) and os.path.lexists(path):
        return _existing_file(path)
    registry = registry or ModelRegistry.default()
    folder = None if registry.get(reference) else \
        installed_models(models_dir).get(reference.removesuffix(".gguf"))
    if folder is not None:  # the common case, answered without reading any header
        return folder
    catalog = catalog or _load_catalog()
    model = find_installed(reference, models_dir, registry=registry, catalog=catalog)
    if model is not None:
        if not model.path.is_file():
            raise ModelFileError(f"{model.name}: its file {model.path} is gone; "
                                 f"`localr1 rm {model.name}`, then pull or import it again")
        return model.path
    from localr1.models.hub_resolve import parse_hub_reference

    entry = catalog.find(reference)
    hub_ref = parse_hub_reference(reference)
    if entry is not None or (hub_ref is not None and hub_ref.quant):
        shown = entry.name if entry else reference
        raise ModelFileError(f"model '{shown}' is not installed; run: localr1 pull {reference}")
    if os.path.lexists(path):  # a bare word that no model has: a file here after all
        return _existing_file(path)
    if names_a_path(reference) or "\\" in reference:
        hint = f" (to download it from the Hub: localr1 pull {reference})" if hub_ref else ""
        raise ModelFileError(f"{path}: no such file{hint}")
    from localr1.models.catalog import UnknownModelError, nearest_hint

    names = [m.name for m in registry.models()] + list(installed_models(models_dir)) + \
        catalog.names()
    hint = nearest_hint(reference.removesuffix(".gguf"), names) or \
        f"; pass a path to a .gguf file, a catalog name (localr1 list --available) or put one " \
        f"in {models_dir}"
    raise UnknownModelError(f"unknown model '{reference}'{hint}")


def find_installed(reference: str, models_dir: Path, *, registry: ModelRegistry | None = None,
                   catalog: Catalog | None = None) -> InstalledModel | None:
    """The installed model `reference` names, or None. Tried in order: a registered name, a
    GGUF in the models folder by file name, a catalog name, an `owner/repo:QUANT` or
    `owner/repo/FILE.gguf` that was pulled, a registered file's path (first, when
    `names_a_path`)."""
    registry = registry or ModelRegistry.default()
    path = Path(reference).expanduser()
    if names_a_path(reference) and path.exists():
        model = registry.find_path(path)
        if model is not None:
            return model
    model = registry.get(reference)
    if model is not None:
        return model
    stem = reference.removesuffix(".gguf")
    folder = installed_models(models_dir).get(stem)
    if folder is not None:
        return registry.find_path(folder) or _folder_model(folder)
    from localr1.models.hub_resolve import local_path, parse_hub_reference, quant_from_filename

    entry = (catalog or _load_catalog()).find(reference)
    if entry is not None:
        pulled = local_path(models_dir, entry.repo, entry.files[0])
        return registry.get(entry.name) or (_folder_model(pulled) if pulled.is_file() else None)
    hub_ref = parse_hub_reference(reference)
    if hub_ref is not None:
        for candidate in registry.models():
            if (candidate.repo or "").lower() != hub_ref.repo.lower():
                continue
            files = [f.path.as_posix() for f in candidate.files]
            if hub_ref.file and any(f.endswith("/" + hub_ref.file) for f in files):
                return candidate
            if hub_ref.quant and quant_from_filename(files[0]) == hub_ref.quant:
                return candidate
    return registry.find_path(path) if path.exists() else None


def mark_used(model_path: Path, registry: ModelRegistry | None = None, *,
              models_dir: Path | None = None) -> None:
    """Record that a model was loaded now (for `list`'s LAST USED). A GGUF dropped into the
    models folder gets its registry record here (the registry is where LAST USED lives);
    any other unregistered file: no-op."""
    registry = registry or ModelRegistry.default()
    model = registry.find_path(model_path)
    if model is None and models_dir is not None and _identity(model_path) in {
            _identity(p) for p in installed_models(models_dir).values()}:
        model = _folder_model(Path(model_path))
        if model is not None and registry.get(model.name) is None:
            registry.put(model)
        else:
            model = None
    if model is not None:
        registry.mark_used(model.name)


def _load_catalog() -> Catalog:
    from localr1.models.catalog import load_catalog

    return load_catalog()


# ---- validation and registration -------------------------------------------------------------


def validate_gguf(parts: tuple[Path, ...]) -> list[GGUFHeader]:
    """Every part's header, checked: magic, version, tensor data within the file, split count."""
    if not parts:
        raise ModelFileError("no GGUF file given")
    for part in parts:
        if not os.path.lexists(part):
            raise ModelFileError(f"{part}: missing part of a split GGUF" if len(parts) > 1
                                 else f"{part}: no such file")
        # Anything else that is not a regular file (a FIFO, a symlink loop): the header
        # reader names it without blocking.
    headers = [read_gguf_header(p) for p in parts]
    if headers[0].split_count != len(parts):
        raise ModelFileError(f"{parts[0]}: the GGUF says it has {headers[0].split_count} "
                             f"part(s), found {len(parts)}")
    return headers


def build_model(name: str, parts: tuple[Path, ...], *, source: str, owned: bool,
                sha256s: tuple[str | None, ...] | None = None, verified: bool = False,
                repo: str | None = None, catalog_name: str | None = None) -> InstalledModel:
    """A registry record for validated GGUF parts (nothing is written)."""
    headers = validate_gguf(parts)
    sha256s = sha256s or (None,) * len(parts)
    files = []
    for part, sha in zip(parts, sha256s, strict=True):
        st = part.stat()
        files.append(ModelFile(part, st.st_size, sha,
                               st.st_mtime_ns if verified and sha else None))
    return InstalledModel(name, tuple(files), source, owned, GGUFSummary.from_headers(headers),
                          repo=repo, catalog_name=catalog_name, added_at=time.time())


def _folder_model(path: Path) -> InstalledModel | None:
    """An unregistered GGUF in the models folder, as a record (None if it is not valid)."""
    try:
        return build_model(path.stem, part_paths(path), source="folder", owned=True)
    except ModelFileError:
        return None


# ---- listing and removing --------------------------------------------------------------------


def list_models(models_dir: Path, registry: ModelRegistry | None = None) -> list[InstalledModel]:
    """Registered models, then valid GGUFs in the models folder that nobody registered."""
    registry = registry or ModelRegistry.default()
    models = sorted(registry.models(), key=lambda m: m.name.lower())
    known = {_identity(f.path) for m in models for f in m.files}
    for path in installed_models(models_dir).values():
        if _identity(path) in known or is_later_part(path.name):
            continue
        model = _folder_model(path)
        if model is not None:
            models.append(model)
    return models


def is_missing(model: InstalledModel) -> bool:
    return not all(f.path.is_file() for f in model.files)


@dataclass(frozen=True)
class RemovedModel:
    model: InstalledModel
    deleted: tuple[Path, ...]  # files deleted; empty when the model was only forgotten


def remove_model(model: InstalledModel, models_dir: Path,
                 registry: ModelRegistry | None = None) -> RemovedModel:
    """Forget a model; delete its files too when they are our own copy: inside the models
    folder (the registry's flag alone does not decide) and no other record's file."""
    from localr1.models.hub_download import remove_partial
    from localr1.models.safe_paths import inside

    registry = registry or ModelRegistry.default()
    deleted = []
    if model.owned:
        others = {_identity(f.path) for m in registry.models()
                  if m.name.lower() != model.name.lower() for f in m.files}
        for f in model.files:
            if not inside(models_dir, f.path.parent) or _identity(f.path) in others:
                continue  # forgotten only
            if f.path.exists() or f.path.is_symlink():
                f.path.unlink()
                deleted.append(f.path)
            remove_partial(f.path)
        _prune_empty_dirs({f.path.parent for f in model.files}, models_dir)
    registry.remove(model.name)
    return RemovedModel(model, tuple(deleted))


def _prune_empty_dirs(folders: set[Path], models_dir: Path) -> None:
    root = models_dir.resolve()
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        current = folder.resolve()
        while current != root and root in current.parents:
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent


# ---- import ----------------------------------------------------------------------------------


def check_model_name(name: str) -> None:
    """The rule for a name given to an imported model: one word that is not a path, and
    not a catalog model's name or alias (`r1` would then mean two models). Raises
    ModelFileError (one line; the name shown with its control characters visible)."""
    shown = visible_controls(name)
    if not name.strip() or any(c.isspace() or unicodedata.category(c).startswith("C")
                               for c in name):
        raise ModelFileError(f"'{shown}' cannot be a model name (no spaces or control "
                             "characters)")
    if names_a_path(name) or name.startswith("."):
        raise ModelFileError(f"'{shown}' cannot be a model name (no '/' or leading '.': it "
                             "would read as a path)")
    from localr1.models.catalog import load_catalog

    if load_catalog().find(name) is not None:
        raise ModelFileError(f"'{shown}' is a catalog model's name; pick another name")


def import_model(path: Path, name: str | None = None, *, copy: bool = False,
                 models_dir: Path, registry: ModelRegistry | None = None) -> InstalledModel:
    """Register a GGUF already on disk (no copy unless asked). Split files: name part 1."""
    registry = registry or ModelRegistry.default()
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; import takes a .gguf file (or --scan)")
    parts = part_paths(path)
    validate_gguf(parts)
    name = name or model_name(path)
    check_model_name(name)
    existing = registry.find_path(path)
    if existing is not None and not copy:
        raise ModelFileError(f"{path} is already installed as '{existing.name}'")
    taken = registry.get(name)
    if taken is not None:
        raise ModelFileError(f"the name '{name}' is taken by {taken.path}; pass --name")
    if copy:
        from localr1.models.hub_download import copy_file, ensure_writable
        from localr1.models.safe_paths import join_inside

        target_dir = models_dir / "imported"
        ensure_writable(target_dir, models_dir)
        copies = []
        for part in parts:
            target = join_inside(target_dir, part.name)
            if target.exists():
                raise ModelFileError(f"{target} already exists")
            copy_file(part, target)
            copies.append(target)
        parts = tuple(copies)
    model = build_model(name, parts, source="import", owned=copy)
    registry.put(model)
    return model


@dataclass(frozen=True)
class ScanResult:
    imported: tuple[InstalledModel, ...]
    skipped: tuple[tuple[FoundModel, str], ...]  # (what, why)


def import_found(found: list[FoundModel],
                 registry: ModelRegistry | None = None) -> ScanResult:
    """Register what scanners.scan_sources found, skipping what is invalid or already
    registered."""
    registry = registry or ModelRegistry.default()
    imported, skipped = [], []
    registered = registry.models()
    known_ids = {_identity(f.path): m.name for m in registered for f in m.files}
    known_shas = {f.sha256: m.name for m in registered for f in m.files if f.sha256}
    for item in found:
        owner = known_ids.get(_identity(item.parts[0])) or \
            next((known_shas[s] for s in item.sha256s if s in known_shas), None)
        if owner is not None:
            skipped.append((item, f"already installed as '{owner}'"))
            continue
        if registry.get(item.name) is not None:
            skipped.append((item, f"the name '{item.name}' is taken"))
            continue
        try:
            model = build_model(item.name, item.parts, source=item.source, owned=False,
                                sha256s=item.sha256s, repo=item.repo)
        except ModelFileError as exc:
            skipped.append((item, str(exc)))
            continue
        registry.put(model)
        imported.append(model)
        known_ids.update({_identity(p): item.name for p in item.parts})
        known_shas.update({s: item.name for s in item.sha256s if s})
    return ScanResult(tuple(imported), tuple(skipped))


def _identity(path: Path) -> tuple[int, int] | Path:
    """A file's (device, inode), so hard links and symlinks count as the same file."""
    try:
        st = path.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return path.absolute()


# ---- pull ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    model: InstalledModel
    already_installed: bool
    files: tuple[DownloadedFile, ...]


def installed_copy(plan: PullPlan, models_dir: Path,
                   registry: ModelRegistry | None = None) -> InstalledModel | None:
    """The registered, still-verified install of exactly these files, if there is one."""
    registry = registry or ModelRegistry.default()
    destinations = plan.local_paths(models_dir)
    model = registry.get(plan.name) or registry.find_path(destinations[0])
    if model is None or len(model.files) != len(plan.files):
        return None
    for have, remote, path in zip(model.files, plan.files, destinations, strict=True):
        if _identity(have.path) != _identity(path) or have.size != remote.size:
            return None
        if remote.sha256 and have.sha256 != remote.sha256:
            return None
        if not have.still_verified():
            return None
    return model


def pull_model(plan: PullPlan, models_dir: Path, *, on_event: OnEvent | None = None,
               options: DownloadOptions | None = None, cancel: threading.Event | None = None,
               registry: ModelRegistry | None = None) -> PullResult:
    """Download (or reuse) the plan's files, validate them, and register the model."""
    from localr1.models.hub_download import DownloadOptions, download, remove_partial

    registry = registry or ModelRegistry.default()
    existing = installed_copy(plan, models_dir, registry)
    if existing is not None:
        return PullResult(existing, True, ())
    files = download(plan, models_dir, on_event or (lambda _event: None),
                     options or DownloadOptions(), cancel)
    # The same files pulled under another name (`r1`, then `owner/repo:Q4_K_M`): one record.
    same_files = registry.find_path(files[0].path)
    name, catalog_name = (same_files.name, same_files.catalog_name) if same_files else \
        (plan.name, None)
    if plan.catalog_entry:
        catalog_name = plan.catalog_entry.name
    try:
        model = build_model(name, tuple(f.path for f in files), source="pull", owned=True,
                            sha256s=tuple(f.sha256 for f in files), verified=True,
                            repo=plan.repo, catalog_name=catalog_name)
    except ModelFileError as exc:
        # The Hub's checksum matched, but what it served is no usable GGUF: keep nothing.
        for f in files:
            f.path.unlink(missing_ok=True)
            remove_partial(f.path)
        _prune_empty_dirs({f.path.parent for f in files}, models_dir)
        raise ModelFileError(f"{exc}; the download was deleted") from None
    registry.put(model)
    return PullResult(model, False, files)
