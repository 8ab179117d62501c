"""What the user typed as SET: a built-in set's name or a JSONL file.

The rule is the models' one: a slash, `~` or a `.jsonl`/`.json` suffix names a file; a bare
word is a set's name, and is tried as a file only when no set has that name.
"""

from __future__ import annotations

from pathlib import Path

from localr1.evaluation.builtin_set import QUICK_SET, quick_set
from localr1.evaluation.problems import ProblemSet, ProblemSetError, load_problem_file
from localr1.evaluation.public_sets import load_public_set, public_set_names


def set_names() -> list[str]:
    return [QUICK_SET, *public_set_names()]


def names_a_file(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") \
        or text.lower().endswith((".jsonl", ".json"))


def resolve_problem_set(text: str, data_dir: Path, on_event=None) -> ProblemSet:
    """The set `text` names; a public set is downloaded on first use (`on_event` sees the
    download's progress). ProblemSetError (one line) for anything unknown."""
    if not names_a_file(text):
        if text == QUICK_SET:
            return quick_set()
        if text in public_set_names():
            return load_public_set(text, data_dir, on_event) if on_event else \
                load_public_set(text, data_dir)
        if not Path(text).is_file():
            raise ProblemSetError(f"no problem set named {text!r}: use one of "
                                  f"{', '.join(set_names())} or a .jsonl file")
    path = Path(text).expanduser()
    if not path.exists():
        raise ProblemSetError(f"{path}: no such file")
    if path.is_dir():
        raise ProblemSetError(f"{path}: is a folder, not a JSONL file")
    return load_problem_file(path)
