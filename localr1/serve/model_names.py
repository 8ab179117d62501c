"""Which model a request names: the loaded one (by its name, an alias or nothing at all) or
another installed model. Never a path: a client must not make the server open files."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from localr1.errors import LocalR1Error
from localr1.models.choice import ChosenModel, name_model
from localr1.models.library import find_installed, list_models
from localr1.serve.api_error import ApiError


class ModelNames:
    def __init__(self, models_dir: Path, loaded: ChosenModel) -> None:
        self.models_dir = models_dir
        self.loaded = loaded  # the model the server started with

    def resolve(self, requested: str | None, current: ChosenModel | None = None) -> ChosenModel:
        """The model to answer with (no name: `current`, the model in memory, so a request
        that names none never causes a swap); ApiError 404 for a name no installed model has."""
        if not requested:
            return current or self.loaded
        if requested.lower() == self.loaded.name.lower():
            return self.loaded
        try:
            model = find_installed(requested, self.models_dir)
        except (LocalR1Error, OSError, ValueError):
            model = None
        if model is None or not model.path.is_file():
            raise ApiError(404, f"model '{requested}' is not installed here "
                                "(GET /v1/models lists the installed models)",
                           code="model_not_found", param="model")
        if same_file(model.path, self.loaded.path):
            return self.loaded
        return name_model(model.path, self.models_dir)

    def listing(self, current: ChosenModel | None) -> dict[str, Any]:
        """GET /v1/models: the model in memory first, then every installed one."""
        names = [m.name for m in (current, self.loaded) if m is not None]
        with contextlib.suppress(LocalR1Error, OSError, ValueError):  # a damaged registry
            names += [m.name for m in list_models(self.models_dir)]
        now = int(time.time())
        unique = list(dict.fromkeys(names))
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": now,
                          "owned_by": "localr1"} for name in unique]}


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return a == b
