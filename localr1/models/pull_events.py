"""What a pull reports while it works, as typed events to a callback (front ends print them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FileStarted:
    filename: str
    index: int  # 1-based, of `count` files in this pull
    count: int
    total_bytes: int
    done_bytes: int  # already on disk (resume) when the action starts
    action: Literal["download", "resume", "verify", "copy"]


@dataclass(frozen=True)
class BytesDone:
    n_bytes: int


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class FileDone:
    filename: str
    how: str


PullEvent = FileStarted | BytesDone | Notice | FileDone
OnEvent = Callable[[PullEvent], None]


def ignore_event(_event: PullEvent) -> None:
    """An OnEvent for callers that want no progress."""
