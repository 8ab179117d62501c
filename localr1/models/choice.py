"""Which model a front end uses, and the one name it goes by.

`run`, `batch`, `doctor` and the TUI all choose here: --model, else the conversation's model,
else `default_model` (the TUI then takes an installed one). The name recorded in the history
and shown everywhere is the library's name for the file (its registered name, or its file
name in the models folder) or, for a GGUF elsewhere, its file stem: never a path. So the same
model gets the same name from every front end.

A GGUF used by its path is registered in place under that name (`record_use(remember=True)`)
when a conversation records it, like the welcome screen does with a typed path: `run -c` and
the TUI then find it again by name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from localr1.config import Settings
from localr1.errors import LocalR1Error, ModelFileError
from localr1.models.library import import_model, installed_models, mark_used, resolve_model
from localr1.models.registry import ModelRegistry
from localr1.models.split_names import model_name
from localr1.paths import AppPaths


@dataclass(frozen=True)
class ChosenModel:
    path: Path
    name: str  # for the history and the screen; never a path
    installed: bool  # registered or in the models folder; False: a GGUF named by its path


def choose_model(requested: str | None, settings: Settings, paths: AppPaths, *,
                 conversation_model: str | None = None,
                 lenient: bool = False) -> ChosenModel | None:
    """--model, else the conversation's model, else default_model; None when nothing names
    one. `lenient` (the TUI, which can show a conversation without its model): a
    conversation's model that is gone falls through to the default, and with nothing named
    an installed one is taken. Raises LocalR1Error (one line) for a bad name."""
    if not requested and conversation_model:
        if not lenient:
            requested = conversation_model
        else:
            with contextlib.suppress(LocalR1Error):
                return name_model(resolve_model(conversation_model, paths.models_dir),
                                  paths.models_dir)
    reference = requested or settings.default_model
    if reference:
        return name_model(resolve_model(reference, paths.models_dir), paths.models_dir)
    return _any_installed(paths.models_dir) if lenient else None


def name_model(path: Path, models_dir: Path) -> ChosenModel:
    """The model at `path` under its library name, or its file stem when it has none."""
    with contextlib.suppress(LocalR1Error, OSError, ValueError):  # a damaged registry
        registered = ModelRegistry.default().find_path(path)
        if registered is not None:
            return ChosenModel(path, registered.name, True)
    real = _real(path)
    for name, candidate in installed_models(models_dir).items():
        if _real(candidate) == real:
            return ChosenModel(path, name, True)
    return ChosenModel(path, model_name(path), False)


def record_use(chosen: ChosenModel, models_dir: Path, *, remember: bool) -> ChosenModel:
    """Mark the model used now (`list`'s LAST USED). With `remember`, a GGUF named by its path
    is first registered in place (nothing copied) so the name the history records finds it
    again; the name may get a -2 suffix when another file has it. Returns the model as named
    from now on."""
    if remember and not chosen.installed:
        chosen = _register(chosen, models_dir)
    # LAST USED is bookkeeping: a registry that cannot be written (a read-only data folder)
    # must not stop a run that logs nothing there.
    with contextlib.suppress(LocalR1Error):
        mark_used(chosen.path, models_dir=models_dir)
    return chosen


def use_typed_model(text: str, models_dir: Path, *, name: str | None = None) -> ChosenModel:
    """What the TUI's path boxes (welcome screen, import dialog) do with what the user typed:
    resolve it like --model (a model name or a path, `library.names_a_path`), register a GGUF
    given by its path in place (under `name` when given, else its file name) and mark it
    used. Raises LocalR1Error (one line)."""
    chosen = name_model(resolve_model(text, models_dir), models_dir)
    if name and not chosen.installed:
        model = import_model(chosen.path, name, models_dir=models_dir)
        chosen = ChosenModel(model.path, model.name, True)
    elif name and chosen.name != name:
        raise ModelFileError(f"{chosen.path} is already installed as '{chosen.name}'")
    return record_use(chosen, models_dir, remember=True)


def _register(chosen: ChosenModel, models_dir: Path) -> ChosenModel:
    # A model name has no whitespace (import refuses it); a file name may.
    name = _free_name("-".join(chosen.name.split()) or "model", models_dir)
    try:
        import_model(chosen.path, name, models_dir=models_dir)
    except ModelFileError:
        named = name_model(chosen.path, models_dir)  # another process registered it first
        if named.installed:
            return named
        raise
    return ChosenModel(chosen.path, name, True)


def _free_name(name: str, models_dir: Path) -> str:
    """`name`, or `name-2`, ...: one that no model, folder GGUF, catalog name or alias, or Hub
    reference already means (a file used by path must not shadow `r1`)."""
    from localr1.models.catalog import load_catalog
    from localr1.models.hub_resolve import parse_hub_reference

    registry = ModelRegistry.default()
    catalog = load_catalog()
    folder = {stem.lower() for stem in installed_models(models_dir)}

    def taken(candidate: str) -> bool:
        return registry.get(candidate) is not None or candidate.lower() in folder or \
            catalog.find(candidate) is not None or parse_hub_reference(candidate) is not None

    candidate, number = name, 1
    while taken(candidate):
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def _any_installed(models_dir: Path) -> ChosenModel | None:
    """A GGUF in the models folder, else the registered model used last (no header reads)."""
    installed = installed_models(models_dir)
    if installed:
        return name_model(next(iter(installed.values())), models_dir)
    try:
        registered = [m for m in ModelRegistry.default().models() if m.path.is_file()]
    except (LocalR1Error, OSError, ValueError):
        return None
    if not registered:
        return None
    latest = max(registered, key=lambda m: m.last_used or m.added_at)
    return ChosenModel(latest.path, latest.name, True)


def _real(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return Path(path).absolute()
