"""Conversation history in one SQLite file.

`from localr1.store import Store, Conversation, Message, SearchHit, StoreError, EvalRunRecord`
works; the names load on first use, so importing the package stays cheap (no sqlite, no
sqlite-utils).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localr1.store.database import Store
    from localr1.store.errors import StoreError
    from localr1.store.eval_runs import EvalRunRecord
    from localr1.store.records import Conversation, Message, SearchHit

__all__ = ["Conversation", "EvalRunRecord", "Message", "SearchHit", "Store", "StoreError"]

_HOMES = {"Store": "database", "StoreError": "errors", "Conversation": "records",
          "Message": "records", "SearchHit": "records", "EvalRunRecord": "eval_runs"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"localr1.store.{_HOMES[name]}"), name)
