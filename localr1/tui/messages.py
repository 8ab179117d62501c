"""Typed messages that thread workers post back to the event loop.

Workers never touch widgets: they call the core and post one of these (`post_message` is
thread-safe); handlers on the app or the chat screen update the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:  # the engine loads llama.cpp's bindings: not needed to draw the first screen
    from localr1.chat_session import TurnSaved
    from localr1.engine.chat_engine import ChatEngine
    from localr1.engine.events import TurnStats
    from localr1.engine.llama_engine import EngineConfig


@dataclass
class ModelLoaded(Message):
    engine: ChatEngine  # an Engine, or a ProcessEngine (a model that uses RPC workers)
    config: EngineConfig
    label: str
    draft_label: str | None = None  # the draft model's name, or "lookup"


@dataclass
class ModelLoadFailed(Message):
    config: EngineConfig
    error: str


@dataclass
class ContextWasTrimmed(Message):
    turn_id: int
    dropped_messages: int


@dataclass
class TurnEnded(Message):
    """Generation is over (finished, stopped or cut off) and the answer is saved."""

    turn_id: int
    stats: TurnStats | None
    saved: TurnSaved | None


@dataclass
class TurnFailed(Message):
    """The turn raised: the message is one line for a notification."""

    turn_id: int
    error: str


class StoreCheckDue(Message):
    """Time to compare the open conversation with the store (the chat screen's timer)."""


@dataclass
class SearchResults(Message):
    query: str
    hits: list  # list[localr1.store.SearchHit]


@dataclass
class ModelDetails(Message):
    """The installed models, listed in a worker (headers of big GGUFs are slow to read)."""

    rows: list  # list[localr1.models.listing.InstalledRow]
    catalog: list  # list[localr1.models.listing.CatalogRow]: not installed here; or a str why not
    scores: dict[str, str] | None = None  # installed row key: its last eval score ("quick 83% ×4")
