"""Split GGUF file names: `X-00002-of-00003.gguf` is part 2 of 3 of the model `X`.

The one place that reads them (the Hub's listing, the models folder, other apps' folders all
go through here). A count of 0, or an index of 0 or above the count, is no split: such a file
is taken as a single GGUF, and its header then says what it really is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_SPLIT_SUFFIX = re.compile(r"-(?P<index>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$",
                           re.IGNORECASE)


@dataclass(frozen=True)
class SplitName:
    base: str  # everything before "-00002-of-00003.gguf" (a "/" path keeps its folders)
    index: int
    count: int
    ext: str  # ".gguf" as the file spells it


def split_name(name: str) -> SplitName | None:
    """The part a file name (or "/"-separated path) names; None when it is not a split."""
    match = _SPLIT_SUFFIX.search(name)
    if not match:
        return None
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count:
        return None
    return SplitName(name[: match.start()], index, count, match["ext"])


def part_names(name: str) -> tuple[str, ...]:
    """Every part of the split GGUF `name` is one part of; (name,) when it is not split."""
    split = split_name(name)
    if split is None:
        return (name,)
    return tuple(f"{split.base}-{i:05d}-of-{split.count:05d}{split.ext}"
                 for i in range(1, split.count + 1))


def part_paths(path: Path) -> tuple[Path, ...]:
    """part_names for a file on disk: the parts, next to it."""
    return tuple(path.with_name(name) for name in part_names(path.name))


def is_later_part(name: str) -> bool:
    """A split's part 2 or later: listed with its first part, not as a model of its own."""
    split = split_name(name)
    return split is not None and split.index != 1


def model_name(path: Path) -> str:
    """The name a GGUF goes by from its file: the stem, without a split's part suffix."""
    split = split_name(path.name)
    return split.base if split is not None and split.base else path.stem


def without_split_suffix(name: str) -> str:
    """`X-00001-of-00003.gguf` -> `X.gguf`: the name with the part suffix dropped."""
    split = split_name(name)
    return split.base + split.ext if split is not None else name
