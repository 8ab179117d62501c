"""GGUFs other apps keep on disk: the Hugging Face cache, LM Studio's models folder and
Ollama's blob store, found for `import --scan` (registered in place by library.import_found).

Their folders are not ours, so what they hold is read with care: an Ollama digest must be a
sha256 and its blob inside the blob store, a cached file must resolve inside the cache, and a
file whose name has control characters (or anything else unsafe) is passed over.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from localr1.models.hf_cache import hf_cache_dir
from localr1.models.hub_resolve import quant_from_filename
from localr1.models.safe_paths import inside, unsafe_reason
from localr1.models.split_names import is_later_part, model_name, part_paths

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FoundModel:
    """A GGUF another app keeps on disk, before it is registered."""

    name: str
    parts: tuple[Path, ...]
    source: str  # "hf-cache", "lmstudio", "ollama"
    sha256s: tuple[str | None, ...]
    repo: str | None = None


def scan_sources(home: Path | None = None) -> list[FoundModel]:
    """GGUFs in the Hugging Face cache, LM Studio's models folder and Ollama's blob store."""
    home = home or Path.home()
    return [*_scan_hf_cache(), *_scan_lmstudio(home), *_scan_ollama(home)]


def _usable_name(relative: str) -> bool:
    """A path inside another app's folder we can turn into a model name (nothing to write, so
    no length limit; control characters and the like would reach the terminal)."""
    return unsafe_reason(relative, limit=sys.maxsize) is None


def _scan_hf_cache() -> list[FoundModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = hf_cache_dir()
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError):
        return []
    found: dict[tuple[str, str], tuple[float, FoundModel]] = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            by_name = {f.file_name: f for f in revision.files}
            for cached in revision.files:
                if not _is_model_gguf(cached.file_name) or is_later_part(cached.file_name):
                    continue
                parts = part_paths(cached.file_path)
                relative = cached.file_path.relative_to(revision.snapshot_path).as_posix()
                if not _usable_name(relative) or not all(inside(cache, p) for p in parts):
                    continue  # a link out of the cache is not what huggingface_hub made
                shas = tuple(_sha_from_blob(by_name[p.name].blob_path) if p.name in by_name
                             else None for p in parts)
                item = FoundModel(_hub_style_name(repo.repo_id, relative), parts, "hf-cache",
                                  shas, repo.repo_id)
                key = (repo.repo_id, relative)
                if key not in found or revision.last_modified > found[key][0]:
                    found[key] = (revision.last_modified, item)  # the newest revision wins
    return _unique_names([item for _, item in found.values()])


def _scan_lmstudio(home: Path) -> list[FoundModel]:
    found = []
    for root in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.gguf")):
            if not _is_model_gguf(path.name) or is_later_part(path.name):
                continue
            relative = path.relative_to(root).parts
            if not _usable_name("/".join(relative)):
                continue
            repo = "/".join(relative[:2]) if len(relative) >= 3 else None
            name = _hub_style_name(repo, "/".join(relative[2:])) if repo else \
                model_name(path)
            parts = part_paths(path)
            found.append(FoundModel(name, parts, "lmstudio", (None,) * len(parts), repo))
    return _unique_names(found)


OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


def _scan_ollama(home: Path) -> list[FoundModel]:
    root = Path(os.environ["OLLAMA_MODELS"]).expanduser() if os.environ.get("OLLAMA_MODELS") \
        else home / ".ollama" / "models"
    manifests = root / "manifests"
    if not manifests.is_dir():
        return []
    found = []
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        except (OSError, ValueError, AttributeError):
            continue
        digest = next((layer.get("digest") for layer in layers if isinstance(layer, dict)
                       and layer.get("mediaType") == OLLAMA_MODEL_LAYER), None)
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            continue
        sha = digest.removeprefix("sha256:")
        where = manifest.relative_to(manifests).parts
        if not _SHA256.match(sha) or len(where) < 2 or not _usable_name("/".join(where)):
            continue  # a digest like "sha256:../../x" would point anywhere
        blob = root / "blobs" / f"sha256-{sha}"
        if not blob.is_file():
            blob = root / "blobs" / digest  # older Ollama versions kept the colon
        if not blob.is_file() or not inside(root / "blobs", blob):
            continue
        found.append(FoundModel(_ollama_name(where), (blob,), "ollama", (sha,)))
    return _unique_names(found)


def _ollama_name(parts: tuple[str, ...]) -> str:
    """manifests/registry.ollama.ai/library/deepseek-r1/7b -> 'deepseek-r1:7b'."""
    *where, model, tag = parts
    if where[:2] == ["registry.ollama.ai", "library"]:
        where = where[2:]
    elif where[:1] == ["registry.ollama.ai"]:
        where = where[1:]
    return "/".join([*where, model]) + f":{tag}"


def _hub_style_name(repo: str, file_path: str) -> str:
    quant = quant_from_filename(file_path)
    return f"{repo}:{quant}" if quant else f"{repo}/{file_path}"


def _unique_names(found: list[FoundModel]) -> list[FoundModel]:
    """Two files that would share a name: the second is named by its full path in the repo."""
    seen: set[str] = set()
    result = []
    for item in found:
        name = item.name
        if name.lower() in seen:
            name = f"{item.repo}/{item.parts[0].name}" if item.repo else \
                f"{item.name}@{item.source}"
        seen.add(name.lower())
        result.append(replace(item, name=name))
    return result


def _is_model_gguf(filename: str) -> bool:
    # Vision projectors ship as GGUFs next to the model but are not models themselves.
    return filename.lower().endswith(".gguf") and not filename.lower().startswith("mmproj")


def _sha_from_blob(blob: Path) -> str | None:
    return blob.name if _SHA256.match(blob.name) else None
