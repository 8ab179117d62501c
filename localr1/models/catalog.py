"""The model catalog (`models.toml`): short names like `r1:7b` for GGUF files on the Hub.

The catalog shipped in the package is read first; the user's `models.toml` in the config folder
then adds models or overrides keys (a quant at a time under `quants`). Names:

* `r1:7b`        the model in its default quant,
* `r1:7b-q8_0`   one quant (`MODEL-QUANT`, or `MODEL:QUANT` for a model name without a tag),
* `r1`           an alias from `[aliases]`.

Every mistake in either file is a ConfigError whose message starts `file:line:column:`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from localr1.config import toml_error
from localr1.errors import ConfigError, ModelFileError

CATALOG_FILE_NAME = "models.toml"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(?::[a-z0-9][a-z0-9._-]*)?$")
_QUANT = re.compile(r"^[A-Za-z0-9_]+$")
_PARAMETERS = re.compile(r"^\d+(?:\.\d+)?[KMBT]$")


class UnknownModelError(ModelFileError):
    """A model name that is neither installed nor in the catalog."""


@dataclass(frozen=True)
class CatalogQuant:
    quant: str  # as in the file names: "Q4_K_M"
    files: tuple[str, ...]  # paths in the repo; several for a split GGUF, in order
    size_bytes: int  # approximate (from size_gb)


@dataclass(frozen=True)
class CatalogModel:
    name: str  # "r1:7b"
    title: str
    based_on: str | None
    repo: str
    revision: str
    parameters: str  # "7.6B"
    architecture: str
    context_length: int
    license: str
    n_layers: int
    n_kv_heads: int
    head_dim: int
    temperature: float
    top_p: float
    default_quant: str
    quants: tuple[CatalogQuant, ...]

    def entry_name(self, quant: str) -> str:
        separator = "-" if ":" in self.name else ":"
        return f"{self.name}{separator}{quant.lower()}"


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable thing: a model in one quant."""

    name: str  # canonical: "r1:7b-q4_k_m"
    model: CatalogModel
    quant: CatalogQuant

    @property
    def repo(self) -> str:
        return self.model.repo

    @property
    def files(self) -> tuple[str, ...]:
        return self.quant.files

    @property
    def size_bytes(self) -> int:
        return self.quant.size_bytes

    @property
    def is_default_quant(self) -> bool:
        return self.quant.quant == self.model.default_quant


@dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]
    aliases: tuple[tuple[str, str], ...]  # (alias, target name)
    sources: tuple[Path, ...]

    def entries(self) -> list[CatalogEntry]:
        return [CatalogEntry(m.entry_name(q.quant), m, q) for m in self.models for q in m.quants]

    def names(self) -> list[str]:
        """Every name the catalog answers to: aliases, model names, model-quant names."""
        return [a for a, _ in self.aliases] + [m.name for m in self.models] + \
            [e.name for e in self.entries()]

    def find(self, name: str) -> CatalogEntry | None:
        key = name.strip().lower()
        for _ in range(8):  # aliases may point at aliases; a short bound stops cycles
            target = dict(self.aliases).get(key)
            if target is None:
                break
            key = target.lower()
        for model in self.models:
            if key == model.name:
                return self._entry(model, model.default_quant)
        for entry in self.entries():
            if key == entry.name:
                return entry
        return None

    def get(self, name: str) -> CatalogEntry:
        entry = self.find(name)
        if entry is None:
            raise UnknownModelError(f"unknown model '{name}'{nearest_hint(name, self.names())}")
        return entry

    def _entry(self, model: CatalogModel, quant: str) -> CatalogEntry:
        for q in model.quants:
            if q.quant == quant:
                return CatalogEntry(model.entry_name(q.quant), model, q)
        raise AssertionError("default_quant is checked at load time")


def nearest_hint(name: str, candidates: list[str]) -> str:
    """'; did you mean a, b?' or '' (for one-line 'unknown model' messages)."""
    lowered = {c.lower(): c for c in candidates}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(lowered[n] for n in near)}?" if near else ""


# ---- loading ---------------------------------------------------------------------------------


def shipped_catalog_path() -> Path:
    return Path(str(resources.files("localr1").joinpath(CATALOG_FILE_NAME)))


def user_catalog_path() -> Path:
    from localr1.paths import app_paths

    return app_paths().config_dir / CATALOG_FILE_NAME


def load_catalog(user_file: Path | None = None, shipped_file: Path | None = None) -> Catalog:
    """The shipped catalog plus the user's models.toml (default: the one in the config dir)."""
    shipped_file = shipped_file or shipped_catalog_path()
    user_file = user_catalog_path() if user_file is None else user_file
    layers = [_read(shipped_file)]
    if user_file.is_file():
        layers.append(_read(user_file))
    models: dict[str, tuple[dict[str, Any], _Source]] = {}
    aliases: dict[str, str] = {}
    for source in layers:
        for name, table in source.data.get("models", {}).items():
            key = name.lower()
            if key in models:
                merged = {**models[key][0], **table,
                          "quants": {**models[key][0].get("quants", {}),
                                     **table.get("quants", {})}}
                models[key] = (merged, source)
            else:
                models[key] = (table, source)
        aliases.update({a.lower(): t.lower() for a, t in source.data.get("aliases", {}).items()})
    built = tuple(_build_model(name, table, source) for name, (table, source) in models.items())
    known = {m.name for m in built} | {CatalogEntry(m.entry_name(q.quant), m, q).name
                                       for m in built for q in m.quants}
    for alias, target in aliases.items():
        if target not in known and target not in aliases:
            source = next(s for s in reversed(layers) if alias in
                          {a.lower() for a in s.data.get("aliases", {})})
            raise source.error(("aliases", alias), f"alias '{alias}' points at unknown "
                               f"model '{target}'")
    return Catalog(built, tuple(aliases.items()), tuple(s.path for s in layers))


@dataclass(frozen=True)
class _Source:
    path: Path
    text: str
    data: dict[str, Any]

    def error(self, keys: tuple[str, ...], problem: str) -> ConfigError:
        line, column = _locate(self.text, keys)
        return ConfigError(f"{self.path}:{line}:{column}: {problem}")


def _read(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model catalog: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, text, exc)) from None
    source = _Source(path, text, data)
    _check_shape(source)
    return source


_MODEL_KEYS: dict[str, tuple[type, ...]] = {
    "title": (str,), "based_on": (str,), "repo": (str,), "revision": (str,),
    "parameters": (str,), "architecture": (str,), "context_length": (int,), "license": (str,),
    "layers": (int,), "kv_heads": (int,), "head_dim": (int,), "temperature": (float, int),
    "top_p": (float, int), "default_quant": (str,), "quants": (dict,),
}
_REQUIRED = ("repo", "parameters", "architecture", "context_length", "license", "layers",
             "kv_heads", "head_dim", "default_quant", "quants")
_QUANT_KEYS: dict[str, tuple[type, ...]] = {"size_gb": (float, int), "file": (str,),
                                            "files": (list,)}


def _type_name(types: tuple[type, ...]) -> str:
    names = {dict: "a table", list: "an array", str: "a string", int: "an integer",
             float: "a number"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _check_shape(source: _Source) -> None:
    """Known keys with the right types, in one file (required keys are checked after merging)."""
    data = source.data
    for key in data:
        if key not in ("models", "aliases"):
            raise source.error((key,), f"unknown key '{key}'; expected [models.\"NAME\"] "
                               "tables and an [aliases] table")
    for key in ("models", "aliases"):
        if key in data and not isinstance(data[key], dict):
            raise source.error((key,), f"'{key}' must be a table")
    for alias, target in data.get("aliases", {}).items():
        if not isinstance(target, str):
            raise source.error(("aliases", alias), f"alias '{alias}' must be a string")
        if not _NAME.match(alias.lower()):
            raise source.error(("aliases", alias), f"bad model name '{alias}'")
    for name, table in data.get("models", {}).items():
        where = ("models", name)
        if not isinstance(table, dict):
            raise source.error(where, f"models.\"{name}\" must be a table")
        if not _NAME.match(name.lower()):
            raise source.error(where, f"bad model name '{name}': use letters, digits, '.', "
                               "'_', '-' and at most one ':' (like r1:7b)")
        for key, value in table.items():
            if key not in _MODEL_KEYS:
                raise source.error((*where, key), f"unknown key '{key}' in model '{name}'; "
                                   f"known: {', '.join(_MODEL_KEYS)}")
            _check_type(source, (*where, key), value, _MODEL_KEYS[key])
        for key in ("context_length", "layers", "kv_heads", "head_dim"):
            if key in table and table[key] <= 0:
                raise source.error((*where, key), f"'{key}' must be positive")
        if "parameters" in table and not _PARAMETERS.match(table["parameters"]):
            raise source.error((*where, "parameters"),
                               "'parameters' must look like \"7.6B\" or \"135M\"")
        if "repo" in table and table["repo"].count("/") != 1:
            raise source.error((*where, "repo"), "'repo' must be \"owner/name\"")
        for quant, spec in table.get("quants", {}).items():
            _check_quant(source, (*where, "quants", quant), quant, spec)


def _check_quant(source: _Source, where: tuple[str, ...], quant: str, spec: Any) -> None:
    if not _QUANT.match(quant):
        raise source.error(where, f"bad quant name '{quant}'")
    if not isinstance(spec, dict):
        raise source.error(where, f"quant '{quant}' must be a table "
                           "like { size_gb = 4.7, file = \"x.gguf\" }")
    for key, value in spec.items():
        if key not in _QUANT_KEYS:
            raise source.error((*where, key), f"unknown key '{key}' in quant '{quant}'; "
                               "known: size_gb, file, files")
        _check_type(source, (*where, key), value, _QUANT_KEYS[key])
    if ("file" in spec) == ("files" in spec):
        raise source.error(where, f"quant '{quant}' needs exactly one of 'file' or 'files'")
    if "size_gb" not in spec:
        raise source.error(where, f"quant '{quant}' needs 'size_gb'")
    files = [spec["file"]] if "file" in spec else spec["files"]
    if not files or not all(isinstance(f, str) and f.endswith(".gguf") for f in files):
        raise source.error((*where, "file" if "file" in spec else "files"),
                           f"quant '{quant}': files must be paths ending in .gguf")


def _check_type(source: _Source, where: tuple[str, ...], value: Any,
                types: tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise source.error(where, f"'{where[-1]}' must be {_type_name(types)}, "
                           f"not {type(value).__name__}")


def _build_model(name: str, table: dict[str, Any], source: _Source) -> CatalogModel:
    where = ("models", next(n for n in source.data.get("models", {}) if n.lower() == name))
    for key in _REQUIRED:
        if key not in table:
            raise source.error(where, f"model '{name}' needs '{key}'")
    quants = tuple(
        CatalogQuant(quant, (spec["file"],) if "file" in spec else tuple(spec["files"]),
                     int(spec["size_gb"] * 1e9))
        for quant, spec in table["quants"].items()
    )
    if table["default_quant"] not in {q.quant for q in quants}:
        raise source.error((*where, "default_quant"), f"default_quant '{table['default_quant']}'"
                           f" is not one of the quants of '{name}'")
    from localr1.config import R1_TEMPERATURE, R1_TOP_P

    return CatalogModel(
        name=name, title=table.get("title", name), based_on=table.get("based_on"),
        repo=table["repo"], revision=table.get("revision", "main"),
        parameters=table["parameters"], architecture=table["architecture"],
        context_length=table["context_length"], license=table["license"],
        n_layers=table["layers"], n_kv_heads=table["kv_heads"], head_dim=table["head_dim"],
        temperature=float(table.get("temperature", R1_TEMPERATURE)),
        top_p=float(table.get("top_p", R1_TOP_P)),
        default_quant=table["default_quant"], quants=quants,
    )


# ---- locating a key in the TOML text, for file:line:column messages ----------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")


def _split_dotted(text: str) -> tuple[str, ...]:
    """`models."r1:7b".quants` -> ('models', 'r1:7b', 'quants')."""
    return tuple(a or b for a, b in re.findall(r'"([^"]*)"|([^."\s]+)', text))


def _key_pattern(key: str) -> str:
    return rf'(?:"{re.escape(key)}"|{re.escape(key)})'


def _locate(text: str, keys: tuple[str, ...]) -> tuple[int, int]:
    """1-based line and column of the TOML key path `keys`, as well as this reader can tell."""
    lines = text.splitlines()
    best: tuple[int, int] | None = None  # (length of the matching header path, line index)
    for index, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            path = _split_dotted(header[1])
            if keys[: len(path)] == path and (best is None or len(path) > best[0]):
                best = (len(path), index)
    depth, start = best if best else (0, -1)
    rest = keys[depth:]
    if not rest:
        line = lines[start]
        return start + 1, len(line) - len(line.lstrip()) + 1
    # Inside the section: `a = ...`, `a.b = ...` or `a = { b = ... }` on one line.
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if _HEADER.match(line):
            break
        assignment = re.match(r"\s*([^=#\[]+?)\s*=", line)
        if not assignment:
            continue
        dotted = _split_dotted(assignment[1])
        if rest[: len(dotted)] != dotted:
            continue
        column = len(line) - len(line.lstrip()) + 1
        for key in rest[len(dotted):]:  # keys of an inline table on the same line
            found = re.search(rf"[\s{{,]{_key_pattern(key)}\s*=", line)
            if found:
                column = found.start() + 2
        return index + 1, column
    if start >= 0:
        line = lines[start]
        return start + 1, len(line) - len(line.lstrip()) + 1
    return 1, 1
