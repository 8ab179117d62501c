"""The models on disk: turning what the user typed (`--model`) into a GGUF path.

Accepted: a path to a .gguf file, or the name of a GGUF in the models folder (its file name
with or without `.gguf`). Unknown names get the nearest matches in the message.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from localr1.errors import ModelFileError


def installed_models(models_dir: Path) -> dict[str, Path]:
    """Installed GGUFs by name (file stem), searched recursively under the models folder."""
    if not models_dir.is_dir():
        return {}
    return {path.stem: path for path in sorted(models_dir.rglob("*.gguf")) if path.is_file()}


def resolve_model(reference: str, models_dir: Path) -> Path:
    path = Path(reference).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a GGUF file")
    looks_like_path = reference.endswith(".gguf") or "/" in reference or "\\" in reference
    models = installed_models(models_dir)
    name = reference.removesuffix(".gguf")
    if name in models:
        return models[name]
    if looks_like_path:
        raise ModelFileError(f"{path}: no such file")
    nearest = difflib.get_close_matches(name, list(models), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(nearest)}?" if nearest else \
        f"; pass a path to a .gguf file or put one in {models_dir}"
    raise ModelFileError(f"unknown model '{reference}'{hint}")
