"""A text file replaced whole: written beside it under a name of this process's own, then
renamed over it, so a reader (or a crash) never meets half of it."""

from __future__ import annotations

import os
from pathlib import Path


def replace_text(path: Path, text: str) -> None:
    """Write `text` as `path`'s whole content; OSError as it comes, with nothing left behind."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
