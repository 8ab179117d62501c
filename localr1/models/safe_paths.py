"""File names from elsewhere (a Hub listing, a catalog, another app's folder) made safe to use.

A Hub repo decides the names of its files; joined unchecked under the models folder, a name like
`../../elsewhere/x.gguf` would write anywhere the user can. Every name is checked part by part
(no `..`, no absolute or empty part, no NUL, backslash or control character, no part longer
than the filesystem allows), and the joined path must still lie inside its folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from localr1.errors import LocalR1Error
from localr1.terminal_text import visible_controls

NAME_MAX_FALLBACK = 255
# The longest suffix we add to a file name while writing it (".linking", ".part").
_LONGEST_SUFFIX = len(".linking")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"^[A-Za-z]:")  # "C:" would be absolute on Windows


class UnsafePathError(LocalR1Error):
    """A file name that would land outside its folder or cannot be a file name here."""


def shown_name(name: str, limit: int = 80) -> str:
    """A name for a one-line message: control characters visible, long names shortened."""
    text = visible_controls(name).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) the filesystem holding `folder` allows."""
    folder = Path(folder).absolute()
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return os.pathconf(candidate, "PC_NAME_MAX")
            except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
                return NAME_MAX_FALLBACK
    return NAME_MAX_FALLBACK


def unsafe_reason(path: str, limit: int = NAME_MAX_FALLBACK) -> str | None:
    """Why a "/"-separated relative path cannot be used under a folder, or None if it can."""
    if not path:
        return "it is empty"
    if "\0" in path:
        return "it contains a NUL character"
    if "\\" in path:
        return "it contains a backslash"
    if _CONTROL.search(path):
        return "it contains a control character"
    if path.startswith("/") or _DRIVE.match(path):
        return "it is an absolute path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"it has a '{part}' part" if part else "it has an empty part"
        if len(part.encode("utf-8", "surrogateescape")) + _LONGEST_SUFFIX > limit:
            return f"a part is longer than this filesystem allows ({limit} bytes)"
    return None


def check_relative(path: str, what: str, folder: Path) -> str:
    """`path` itself when it is safe to join under `folder`, else UnsafePathError."""
    reason = unsafe_reason(path, name_max(folder))
    if reason is not None:
        raise UnsafePathError(f"refusing {what} '{shown_name(path)}': {reason}")
    return path


def inside(folder: Path, path: Path) -> bool:
    """True when `path`, with links and `..` resolved, lies inside `folder` (also resolved)."""
    try:
        root = Path(folder).resolve()
        target = Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return False
    return target == root or root in target.parents


def join_inside(folder: Path, *relative: str, what: str = "file name") -> Path:
    """`folder` joined with checked "/"-separated relative paths, verified to stay inside."""
    for part in relative:
        check_relative(part, what, folder)
    path = Path(folder).joinpath(*(p for rel in relative for p in rel.split("/")))
    if not inside(folder, path):
        raise UnsafePathError(f"refusing {what} '{shown_name('/'.join(relative))}': it leads "
                              f"outside {folder}")
    return path
