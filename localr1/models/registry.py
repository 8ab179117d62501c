"""The registry of installed models: one small JSON file in the data folder.

It remembers what `pull` and `import` put on disk, under which name, with the GGUF facts that
`list` and the fit estimate need (so listing never re-reads multi-GB headers) and the sha256
each file was verified against (so an installed model is not fetched or hashed again while its
size and mtime are unchanged). Every change rewrites the file atomically (a temp file, then
os.replace) under an advisory lock, so concurrent commands never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from localr1.errors import ConfigError
from localr1.models.gguf_header import GGUFHeader

REGISTRY_FILE_NAME = "models.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelFile:
    path: Path
    size: int
    sha256: str | None
    verified_mtime_ns: int | None = None  # the file's mtime when its sha256 was checked

    def still_verified(self) -> bool:
        """True while the file is the one that was hashed (same size and mtime)."""
        if self.sha256 is None or self.verified_mtime_ns is None:
            return False
        try:
            st = self.path.stat()
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.verified_mtime_ns


@dataclass(frozen=True)
class GGUFSummary:
    """What listing and the fit estimate need from a GGUF header, read once."""

    architecture: str | None
    title: str | None  # general.name
    quant: str | None
    parameter_count: int
    context_length: int | None
    n_layers: int | None
    n_kv_heads: int | None
    key_length: int | None
    value_length: int | None
    weights_bytes: int  # tensor data, all parts together

    @classmethod
    def from_headers(cls, headers: list[GGUFHeader]) -> GGUFSummary:
        first = headers[0]
        return cls(first.architecture, first.name, first.file_type,
                   sum(h.parameter_count for h in headers), first.context_length,
                   first.block_count, first.head_count_kv, first.key_length, first.value_length,
                   sum(h.data_size for h in headers))


@dataclass(frozen=True)
class InstalledModel:
    name: str
    files: tuple[ModelFile, ...]  # a split GGUF's parts in order; llama.cpp opens the first
    source: str  # "pull", "import", "hf-cache", "lmstudio", "ollama" or "folder"
    owned: bool  # True: our own copy, `rm` deletes it; False: `rm` only forgets it
    summary: GGUFSummary
    repo: str | None = None
    catalog_name: str | None = None
    added_at: float = 0.0
    last_used: float | None = None

    @property
    def path(self) -> Path:
        return self.files[0].path

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str | None:
        return self.files[0].sha256 if len(self.files) == 1 else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [{**f, "path": str(f["path"])} for f in data["files"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstalledModel:
        files = tuple(ModelFile(**{**f, "path": Path(f["path"])}) for f in data["files"])
        return cls(**{**data, "files": files, "summary": GGUFSummary(**data["summary"])})


class ModelRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> ModelRegistry:
        from localr1.paths import app_paths

        return cls(app_paths().data_dir / REGISTRY_FILE_NAME)

    # ---- reading ----------------------------------------------------------------------------

    def models(self) -> list[InstalledModel]:
        return list(self._load().values())

    def get(self, name: str) -> InstalledModel | None:
        key = name.strip().lower()
        return next((m for m in self._load().values() if m.name.lower() == key), None)

    def find_path(self, path: Path) -> InstalledModel | None:
        """The model one of whose files is `path` (compared after resolving links)."""
        target = _real(path)
        return next((m for m in self._load().values()
                     if any(_real(f.path) == target for f in m.files)), None)

    # ---- writing ----------------------------------------------------------------------------

    def put(self, model: InstalledModel) -> None:
        """Add a model, or replace the one with the same name."""
        with self._transaction() as models:
            models.pop(model.name.lower(), None)
            models[model.name.lower()] = model

    def remove(self, name: str) -> InstalledModel | None:
        with self._transaction() as models:
            return models.pop(name.strip().lower(), None)

    def mark_used(self, name: str, when: float | None = None) -> None:
        with self._transaction() as models:
            key = name.lower()
            if key in models:
                models[key] = replace(models[key], last_used=when or time.time())

    # ---- the file ---------------------------------------------------------------------------

    def _load(self) -> dict[str, InstalledModel]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the model registry: {exc}") from None
        try:
            data = json.loads(text)
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {data.get('version')!r}")
            models = [InstalledModel.from_json(m) for m in data["models"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{self.path}: damaged model registry ({exc}); fix or delete it, "
                              "then `localr1 import` your models again") from None
        return {m.name.lower(): m for m in models}

    def _save(self, models: dict[str, InstalledModel]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": FORMAT_VERSION,
                "models": [m.to_json() for m in sorted(models.values(), key=lambda m: m.name)]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict[str, InstalledModel]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path.with_name(self.path.name + ".lock")):
                models = self._load()
                yield models
                self._save(models)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"{self.path}: cannot write the model registry ({reason}); "
                              "check the data folder's permissions or set LOCALR1_HOME") from None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An advisory lock across processes where the platform has one (POSIX flock)."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace still keeps the file whole
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _real(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return Path(path).absolute()
