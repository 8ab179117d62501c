"""Export and import: a conversation as JSON (everything: alternates, reasoning, stats,
settings) and back under new ids. Imports are checked field by field first, so a hostile
file gives one StoreError line and the database stays as it was.

An import keeps the export's times, so a conversation that came in once (or was exported
from this history) is recognised when the same file comes again: same creation time, and
every exported message (role, text, time) already in it. An export without times (made by
hand: they become the time of import) is recognised by its title and every message's role
and text instead.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from localr1.store.errors import StoreError
from localr1.store.params import is_valid_text, shown, split_params
from localr1.store.records import FINISH_REASONS, MAX_ID, ROLES, title_from_text, utc_now

if TYPE_CHECKING:
    from sqlite_utils import Database

    from localr1.store.database import Store

EXPORT_FORMAT = "localr1-conversation"
EXPORT_BUNDLE_FORMAT = "localr1-conversations"  # `history export --all --format json`
EXPORT_VERSION = 1
# A conversation param keyed by message ids (the chat app's reasons for failed answers,
# {"<message id>": "text"}): an import gives the messages new ids, so its keys follow them.
TURN_ERRORS = "turn_errors"


def export_conversation(store: Store, id: int) -> dict[str, Any]:
    """Everything, alternates included, as JSON-able data (see `import_conversation`)."""
    conversation = store.conversation(id)
    rows = store._rows("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (id,))
    data = conversation.as_dict()
    del data["message_count"]
    messages = [{k: v for k, v in row.items() if k != "conversation_id"} for row in rows]
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "conversation": data,
            "messages": messages}


def import_conversations(store: Store, data: Any) -> list[int]:
    """One export, a list of exports, or an `--all` bundle; all or nothing."""
    return import_new_conversations(store, data, skip_present=False).imported


@dataclass(frozen=True)
class ImportOutcome:
    imported: list[int]  # the new conversation ids, in the export's order
    skipped: int  # exports already present in the history


def import_new_conversations(store: Store, data: Any, *,
                             skip_present: bool = True) -> ImportOutcome:
    """Like `import_conversations`, but (with `skip_present`) an export already in the
    history, or earlier in the same file, is skipped instead of added again."""
    exports = _unbundle(data)
    checked = [_check_export(export, n if len(exports) > 1 else None)
               for n, export in enumerate(exports, 1)]

    def insert(db: Database) -> ImportOutcome:
        imported: list[int] = []
        present = _PresentConversations(db) if skip_present else None
        for export in checked:
            if present is not None and present.holds(export):
                continue
            imported.append(_insert_export(db, export.conversation, export.messages))
            if present is not None:
                present.add(imported[-1], export.conversation["created_at"],
                            export.conversation["title"])
        return ImportOutcome(imported, len(checked) - len(imported))

    return store._write(insert)


@dataclass(frozen=True)
class _CheckedExport:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]]  # parents first
    dated: bool  # every time came from the export (none was filled in with "now")


class _PresentConversations:
    """The history's conversations by creation time and by title, to recognise one imported
    before: one that holds every exported message (it may have grown since), compared with
    times when the export has them (then created at the same moment), else by title."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.by_time: dict[str | None, list[int]] = {}
        self.by_title: dict[str | None, list[int]] = {}
        for id, created_at, title in db.execute(
                "SELECT id, created_at, title FROM conversations"):
            self.add(id, created_at, title)

    def add(self, id: int, created_at: str, title: str | None) -> None:
        # Normalised as imports write times, so rows from older versions compare too.
        self.by_time.setdefault(_utc_timestamp(created_at), []).append(id)
        self.by_title.setdefault(title, []).append(id)

    def holds(self, export: _CheckedExport) -> bool:
        conv, dated = export.conversation, export.dated
        candidates = self.by_time.get(conv["created_at"], ()) if dated else \
            self.by_title.get(conv["title"], ())
        wanted = {_fingerprint(m["role"], m["content"], m["created_at"], dated)
                  for m in export.messages}
        for id in candidates:
            rows = self.db.execute("SELECT role, content, created_at FROM messages "
                                   "WHERE conversation_id = ?", (id,))
            if wanted <= {_fingerprint(role, content, _utc_timestamp(created_at), dated)
                          for role, content, created_at in rows}:
                return True
        return False


def _fingerprint(role: str, content: str, created_at: str | None, dated: bool) -> tuple:
    return (role, content, created_at) if dated else (role, content)


# ---- import validation ---------------------------------------------------------------------

_TEXT = (str,)
_NUMBER = (int, float)
_MESSAGE_TYPES: dict[str, tuple[type, ...]] = {
    "content": _TEXT, "reasoning": _TEXT, "thinking_seconds": _NUMBER, "model": _TEXT,
    "finish_reason": _TEXT, "prompt_tokens": (int,), "completion_tokens": (int,),
    "reasoning_tokens": (int,), "ttft_ms": _NUMBER, "tokens_per_second": _NUMBER,
    "created_at": _TEXT, "batch_id": _TEXT,
}
_CONVERSATION_TYPES: dict[str, tuple[type, ...]] = {
    "title": _TEXT, "model": _TEXT, "system_prompt": _TEXT, "params": (dict,),
    "created_at": _TEXT, "updated_at": _TEXT, "pinned": (bool,), "archived": (bool,),
    "active_leaf_id": (int,),
}


def _unbundle(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and data.get("format") == EXPORT_BUNDLE_FORMAT:
        data = data.get("conversations")
        if not isinstance(data, list):
            raise StoreError("not a localr1 export: 'conversations' must be a list")
    exports = data if isinstance(data, list) else [data]
    if not exports:
        raise StoreError("nothing to import: the list of conversations is empty")
    return exports


def _check_export(data: Any, number: int | None) -> _CheckedExport:
    """Validated conversation and messages in insertion order, or a one-line StoreError."""
    where = f"conversation {number}: " if number is not None else ""

    def fail(message: str) -> StoreError:
        return StoreError(f"invalid import: {where}{message}")

    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise fail(f"not a localr1 export (expected \"format\": \"{EXPORT_FORMAT}\")")
    if data.get("version") != EXPORT_VERSION:
        raise fail(f"unsupported export version {shown(data.get('version'))} "
                   f"(this localr1 reads version {EXPORT_VERSION})")
    conversation = data.get("conversation")
    messages = data.get("messages")
    if not isinstance(conversation, dict):
        raise fail("'conversation' must be an object")
    if not isinstance(messages, list):
        raise fail("'messages' must be a list")
    now = utc_now()
    conv = {"title": None, "model": None, "system_prompt": None, "params": {},
            "created_at": now, "updated_at": now, "pinned": False, "archived": False,
            "active_leaf_id": None}
    for key, value in conversation.items():
        if key == "id" or key == "message_count":
            continue
        if key not in _CONVERSATION_TYPES:
            raise fail(f"unknown conversation field {shown(key)}")
        if value is not None and not _is_type(value, _CONVERSATION_TYPES[key]):
            raise fail(f"conversation field {key!r} has the wrong type")
        if value is None and key in ("params", "created_at", "updated_at", "pinned",
                                     "archived"):
            raise fail(f"conversation field {key!r} cannot be null")
        if key in ("created_at", "updated_at"):
            value = _utc_timestamp(value)
            if value is None:
                raise fail(f"conversation field {key!r} is not an ISO-8601 time")
        elif key == "title" and value is not None:
            value = title_from_text(value, limit=10_000)  # one line, as `rename` makes it
        conv[key] = value
    try:
        conv["sampling"], conv["params"] = split_params(conv["params"])
    except StoreError as exc:
        raise fail(str(exc)) from None

    by_id: dict[int, dict[str, Any]] = {}
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise fail(f"message {n} is not an object")
        old_id = message.get("id")
        if not _is_type(old_id, (int,)):
            raise fail(f"message {n} needs an integer 'id'")
        if old_id in by_id:
            raise fail(f"message id {old_id} appears twice")
        role = message.get("role")
        if role not in ROLES:
            raise fail(f"message {old_id}: role must be one of {', '.join(ROLES)}")
        parent = message.get("parent_id")
        if parent is not None and not _is_type(parent, (int,)):
            raise fail(f"message {old_id}: 'parent_id' must be an integer or null")
        clean: dict[str, Any] = {"id": old_id, "parent_id": parent, "role": role,
                                 "content": "", "created_at": now}
        for key, value in message.items():
            if key in ("id", "parent_id", "role", "conversation_id"):
                continue
            if key not in _MESSAGE_TYPES:
                raise fail(f"message {old_id}: unknown field {shown(key)}")
            if value is not None and not _is_type(value, _MESSAGE_TYPES[key]):
                raise fail(f"message {old_id}: {key!r} has the wrong type")
            if value is None and key in ("content", "created_at"):
                raise fail(f"message {old_id}: {key!r} cannot be null")
            if key == "created_at":
                value = _utc_timestamp(value)
                if value is None:
                    raise fail(f"message {old_id}: 'created_at' is not an ISO-8601 time")
            clean[key] = value
        if clean.get("finish_reason") is not None and clean["finish_reason"] not in \
                FINISH_REASONS:
            raise fail(f"message {old_id}: unknown finish_reason "
                       f"{shown(clean['finish_reason'])}")
        by_id[old_id] = clean

    # Parents before children, otherwise in the original id order (new ids keep the order
    # that "newest leaf" and alternates rely on); dangling links and cycles are refused.
    children: dict[int, list[int]] = {}
    ready: list[int] = []
    for message in by_id.values():
        parent = message["parent_id"]
        if parent is None:
            ready.append(message["id"])
        elif parent not in by_id:
            raise fail(f"message {message['id']}: parent {parent} is not in the export")
        else:
            children.setdefault(parent, []).append(message["id"])
    heapq.heapify(ready)
    ordered: list[dict[str, Any]] = []
    while ready:
        old_id = heapq.heappop(ready)
        ordered.append(by_id[old_id])
        for child in children.get(old_id, ()):
            heapq.heappush(ready, child)
    if len(ordered) != len(by_id):
        placed = {m["id"] for m in ordered}
        stuck = sorted(set(by_id) - placed)[:5]
        raise fail(f"messages {', '.join(map(str, stuck))} form a cycle")
    if conv["active_leaf_id"] is not None and conv["active_leaf_id"] not in by_id:
        raise fail(f"active_leaf_id {conv['active_leaf_id']} is not one of its messages")
    dated = "created_at" in conversation and all("created_at" in m for m in messages)
    return _CheckedExport(conv, ordered, dated)


def _utc_timestamp(text: str) -> str | None:
    """`text` as the store writes times (UTC ISO-8601, so they sort right); None if it is not
    a time. One without a zone is taken as UTC, as the store's own are."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):  # OverflowError: shifted past year 1 or 9999
        return None


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    """`value` is one of `types` and SQLite can store it as it is."""
    # bool is an int in Python, but true is not a token count.
    if isinstance(value, bool):
        return bool in types
    if not isinstance(value, types):
        return False
    if isinstance(value, int):
        return -MAX_ID - 1 <= value <= MAX_ID
    if isinstance(value, float):
        return math.isfinite(value)  # NaN and Infinity would not print as JSON again
    if isinstance(value, str):
        return is_valid_text(value)
    return True


def _insert_export(db: Database, conv: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    columns = {"title": conv["title"], "model": conv["model"],
               "system_prompt": conv["system_prompt"], "params": conv["params"],
               "created_at": conv["created_at"], "updated_at": conv["updated_at"],
               "pinned": int(conv["pinned"]), "archived": int(conv["archived"]),
               **conv["sampling"]}
    conversation_id = db.execute(
        f"INSERT INTO conversations ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})", tuple(columns.values())).lastrowid
    new_ids: dict[int, int] = {}
    for message in messages:
        columns = {k: v for k, v in message.items() if k != "id"}
        columns["conversation_id"] = conversation_id
        if columns["parent_id"] is not None:
            columns["parent_id"] = new_ids[columns["parent_id"]]
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        new_ids[message["id"]] = db.execute(
            f"INSERT INTO messages ({names}) VALUES ({marks})",
            tuple(columns.values())).lastrowid
    if conv["active_leaf_id"] is not None:
        db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?",
                   (new_ids[conv["active_leaf_id"]], conversation_id))
    params = json.loads(conv["params"])
    if TURN_ERRORS in params:
        params[TURN_ERRORS] = _remapped(params[TURN_ERRORS], new_ids)
        if not params[TURN_ERRORS]:
            del params[TURN_ERRORS]
        db.execute("UPDATE conversations SET params = ? WHERE id = ?",
                   (json.dumps(params, ensure_ascii=False, allow_nan=False), conversation_id))
    return conversation_id


def _remapped(by_message: Any, new_ids: dict[int, int]) -> dict[str, Any]:
    """`by_message` ({"<old message id>": value}) keyed by the new ids; keys that name no
    imported message are dropped (they would attach to someone else's message)."""
    if not isinstance(by_message, dict):
        return {}
    return {str(new_ids[int(key)]): value for key, value in by_message.items()
            if key.isdecimal() and int(key) in new_ids}

