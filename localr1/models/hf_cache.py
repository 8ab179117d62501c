"""The user's Hugging Face cache: where huggingface_hub keeps what it downloaded.

A pull reuses a blob from it when the sha256 matches (blobs are named by it), and
`import --scan` registers the GGUFs in it in place.
"""

from __future__ import annotations

import os
from pathlib import Path


def hf_cache_dir() -> Path:
    """The hub cache as huggingface_hub would use it now (HF_HUB_CACHE, HF_HOME, default)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def find_in_hf_cache(sha256: str, size: int, repo: str | None = None) -> Path | None:
    """A cached blob with this sha256 (LFS blobs are named by it), the same repo's first."""
    cache = hf_cache_dir()
    if not cache.is_dir():
        return None
    folders = sorted(cache.glob("models--*"))
    if repo:
        own = cache / ("models--" + repo.replace("/", "--"))
        folders = [own] + [f for f in folders if f != own]
    for folder in folders:
        blob = folder / "blobs" / sha256
        try:
            if blob.is_file() and blob.stat().st_size == size:
                return blob
        except OSError:
            continue
    return None

