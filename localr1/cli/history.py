"""`localr1 history`: list, show, search, export, import and delete saved conversations.

The main CLI registers the group (`cli.add_command(history)`) and turns LocalR1Error into one
line and exit 1. Only click is imported here; the store loads inside each command.
"""

from __future__ import annotations

import secrets
import sys
from typing import TYPE_CHECKING, Any

import click

from localr1.cli.conversation_id import CONVERSATION_ID
from localr1.durations import format_seconds
from localr1.errors import LocalR1Error
from localr1.terminal_text import safe_echo

if TYPE_CHECKING:
    from localr1.store import Conversation, Message, Store


class HistoryFileError(LocalR1Error):
    """An export or import file that cannot be written, read or parsed."""


def _open_store(*, read_only: bool = False) -> Store:
    """The history; `read_only` for the commands that only read (a read-only data folder
    must not stop them)."""
    from localr1.paths import app_paths
    from localr1.store import Store

    return Store.open(app_paths().db_path, read_only=read_only)


def _local_time(iso: str) -> str:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):  # an imported file can say anything
        return _safe(iso[:16])


def _safe(text: str) -> str:
    from localr1.terminal_text import visible_controls

    return visible_controls(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _echo_json(data: Any) -> None:
    from localr1.store.json_text import json_text

    safe_echo(json_text(data))


@click.group()
def history() -> None:
    """Saved conversations: list, show, search, export, import, delete."""


# ---- list ----------------------------------------------------------------------------------


@history.command("list")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many conversations to list.")
@click.option("--archived", "include_archived", is_flag=True,
              help="Include archived conversations.")
@click.option("--json", "json_output", is_flag=True, help="Print the conversations as JSON.")
def list_command(limit: int, include_archived: bool, json_output: bool) -> None:
    """Newest conversations first (pinned ones, marked *, before the rest)."""
    with _open_store(read_only=True) as store:
        conversations = store.list_conversations(limit=limit,
                                                 include_archived=include_archived)
    if json_output:
        _echo_json([c.as_dict() for c in conversations])
        return
    if not conversations:
        safe_echo("No saved conversations.")
        return
    safe_echo(f"  {'ID':>5}  {'UPDATED':<16}  {'MODEL':<24}  {'MSGS':>5}  TITLE")
    for c in conversations:
        mark = "*" if c.pinned else " "
        model = _safe(_one_line(c.model or "-"))
        if len(model) > 24:
            model = model[:23] + "…"
        title = _safe(c.title or "(untitled)") + ("  [archived]" if c.archived else "")
        safe_echo(f"{mark} {c.id:>5}  {_local_time(c.updated_at):<16}  {model:<24}  "
                   f"{c.message_count or 0:>5}  {title}")


# ---- show ----------------------------------------------------------------------------------


@history.command("show")
@click.argument("conversation_id", type=CONVERSATION_ID)
@click.option("--json", "output", flag_value="json",
              help="Print the shown branch as JSON (with the conversation's settings).")
@click.option("--markdown", "output", flag_value="markdown", help="Print it as Markdown.")
@click.option("--reasoning", is_flag=True, help="Include the models' reasoning.")
def show(conversation_id: int, output: str | None, reasoning: bool) -> None:
    """Print a conversation (the branch currently shown in the chat)."""
    with _open_store(read_only=True) as store:
        if output == "markdown":
            safe_echo(store.conversation_markdown(conversation_id,
                                                   include_reasoning=reasoning), nl=False)
            return
        conversation = store.conversation(conversation_id)
        messages = store.branch(conversation_id)
        alternates = {m.id: _position(store, m) for m in messages}
    if output == "json":
        dropped = set() if reasoning else {"reasoning"}
        _echo_json({"conversation": conversation.as_dict(),
                    "messages": [{k: v for k, v in m.as_dict().items() if k not in dropped}
                                 for m in messages]})
        return
    _print_conversation(conversation, messages, alternates, reasoning)


def _position(store: Store, message: Message) -> tuple[int, int]:
    siblings = store.alternates(message.id)
    return [m.id for m in siblings].index(message.id) + 1, len(siblings)


def _print_conversation(conversation: Conversation, messages: list[Message],
                        alternates: dict[int, tuple[int, int]], reasoning: bool) -> None:
    safe_echo(_safe(conversation.title or "(untitled)"), bold=True)
    details = [f"conversation {conversation.id}"]
    if conversation.model:
        details.append(f"model {_safe(conversation.model)}")
    details.append(f"updated {_local_time(conversation.updated_at)}")
    safe_echo(" · ".join(details))
    if conversation.system_prompt:
        safe_echo()
        safe_echo("System prompt:", bold=True)
        safe_echo(_safe(conversation.system_prompt.strip()))
    for message in messages:
        safe_echo()
        header = message.role.capitalize()
        index, count = alternates.get(message.id, (1, 1))
        if count > 1:
            header += f" [{index}/{count}]"
        if message.finish_reason == "incomplete":
            header += " (interrupted: the answer was cut off)"
        elif message.finish_reason == "cancelled":
            header += " (stopped)"
        elif message.finish_reason in ("length", "error"):
            header += f" ({message.finish_reason})"
        safe_echo(header + ":", bold=True)
        if reasoning and message.reasoning:
            seconds = message.thinking_seconds
            took = f" ({format_seconds(seconds)})" if seconds is not None else ""
            safe_echo(f"[reasoning{took}]", dim=True)
            safe_echo(_safe(message.reasoning.strip()), dim=True)
            safe_echo("[/reasoning]", dim=True)
        safe_echo(_safe(message.content.strip()))


# ---- search --------------------------------------------------------------------------------


@history.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many hits to print.")
@click.option("--reasoning", is_flag=True, help="Search the reasoning too.")
@click.option("--json", "json_output", is_flag=True,
              help="Print the hits as JSON (matches in snippets wrapped in **).")
def search(query: tuple[str, ...], limit: int, reasoning: bool, json_output: bool) -> None:
    """Full-text search over titles and messages, best match first.

    Every word must match; quotes, AND/OR/NOT, * and the like are plain text.
    """
    text = " ".join(query)
    # For the terminal: markers made for this call, so no stored text can fake a highlight;
    # swapped for bold after the text around them is escaped.
    token = secrets.token_hex(8)
    marks = (f"<{token}>", f"</{token}>")
    highlight = ("**", "**") if json_output else marks
    with _open_store(read_only=True) as store:
        hits = store.search(text, limit=limit, include_reasoning=reasoning,
                            highlight=highlight)
    if json_output:
        _echo_json([hit.as_dict() for hit in hits])
        return
    if not hits:
        safe_echo("No matches.")
        return
    for hit in hits:
        where = "title" if hit.message_id is None else f"message {hit.message_id}, {hit.role}"
        click.echo(click.style(f"{hit.conversation_id:>5}", bold=True) + "  "
                   + _safe(hit.title or "(untitled)") + click.style(f"  ({where})", dim=True))
        click.echo("       " + _highlighted(_one_line(hit.snippet), marks))


def _highlighted(snippet: str, marks: tuple[str, str]) -> str:
    start, end = marks
    parts = []
    for n, chunk in enumerate(snippet.split(start)):
        if n == 0:
            parts.append(_safe(chunk.replace(end, "")))
            continue
        match, _, rest = chunk.partition(end)
        parts.append(click.style(_safe(match), bold=True, fg="yellow") + _safe(rest))
    return "".join(parts)


# ---- export / import -----------------------------------------------------------------------


@history.command("export")
@click.argument("conversation_id", type=CONVERSATION_ID, required=False)
@click.option("--all", "export_all", is_flag=True, help="Every conversation, archived too.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]),
              help="Default: from the -o file's suffix, else json.")
@click.option("-o", "--output", default="-", show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True), help="File to write (- = stdout).")
@click.option("--reasoning", is_flag=True, help="Markdown: include the reasoning "
              "(JSON always has everything: reasoning, alternates, stats).")
def export(conversation_id: int | None, export_all: bool, fmt: str | None, output: str,
           reasoning: bool) -> None:
    """Write conversation ID (or --all) as Markdown (shown branch) or JSON (everything).

    JSON exports (settings included) round-trip through `localr1 history import`. A file
    written with -o is private to you (0600), like the history itself.
    """
    from localr1.store.json_text import json_text

    if (conversation_id is None) == (not export_all):
        raise click.UsageError("give a conversation ID or --all (not both)")
    if fmt is None:
        fmt = "md" if output.lower().endswith((".md", ".markdown")) else "json"
    with _open_store(read_only=True) as store:
        if export_all:
            ids = [c.id for c in _all_conversations(store)]
        else:
            ids = [store.conversation(conversation_id).id]
        if fmt == "md":
            text = "\n---\n\n".join(store.conversation_markdown(i, include_reasoning=reasoning)
                                    for i in ids)
        else:
            from localr1.store.transfer import EXPORT_BUNDLE_FORMAT, EXPORT_VERSION

            exports = [store.export_conversation(i) for i in ids]
            data: Any = exports[0] if not export_all else {
                "format": EXPORT_BUNDLE_FORMAT, "version": EXPORT_VERSION,
                "conversations": exports}
            text = json_text(data) + "\n"
    if output == "-":
        safe_echo(text, nl=False)
        return
    _write_private(output, text)
    noun = "conversation" if len(ids) == 1 else "conversations"
    safe_echo(f"wrote {len(ids)} {noun} to {output}", err=True)


def _write_private(path: str, text: str) -> None:
    """Write `text` to `path` as a private (0600) file, also when it replaces an existing
    file; a device such as /dev/stdout keeps its mode."""
    import os
    import stat

    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8") as file:
            if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                os.fchmod(file.fileno(), 0o600)  # the umask can take bits away, not add them
            file.write(text)
    except OSError as exc:
        raise HistoryFileError(f"{path}: {exc.strerror or exc}") from None


def _all_conversations(store: Store) -> list[Conversation]:
    found: list[Conversation] = []
    while True:
        page = store.list_conversations(limit=500, offset=len(found), include_archived=True)
        found += page
        if len(page) < 500:
            return found


# An export is JSON text: it starts with an object or a list, and is read with a size cap, so
# a device like /dev/zero or /dev/full is refused at its first bytes instead of read forever.
_EXPORT_LIMIT = 1 << 30
_CHUNK = 1 << 20


def _read_export(handle, name: str) -> str:
    chunks: list[bytes] = []
    size = 0
    while chunk := handle.read(_CHUNK):
        if not chunks:
            start = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
            if start and start not in b"{[":
                raise HistoryFileError(
                    f"{name}: not a localr1 export (an export is a JSON object or list)")
        chunks.append(chunk)
        size += len(chunk)
        if size > _EXPORT_LIMIT:
            raise HistoryFileError(f"{name}: larger than {_EXPORT_LIMIT >> 30} GiB; not an export")
    return b"".join(chunks).decode("utf-8-sig")


@history.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--duplicate", is_flag=True,
              help="Add conversations even if they are already in the history.")
def import_command(file: str, duplicate: bool) -> None:
    """Add conversations from a JSON export (one, a list, or `export --all`) under new ids.

    A conversation already in the history (imported before, or exported from it) is skipped
    unless --duplicate. Prints one summary line with the new ids.
    """
    import json

    from localr1.store.transfer import import_new_conversations

    try:
        if file == "-":
            text = _read_export(sys.stdin.buffer, file)
        else:
            with open(file, "rb") as handle:
                text = _read_export(handle, file)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HistoryFileError(f"{file}: {_one_line(reason)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryFileError(f"{file}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                               f"{exc.msg})") from None
    except RecursionError:
        raise HistoryFileError(f"{file}: not a localr1 export (nested too deeply)") from None
    except ValueError as exc:  # e.g. a number with more than 4,300 digits
        raise HistoryFileError(f"{file}: not valid JSON ({_one_line(str(exc))})") from None
    with _open_store() as store:
        outcome = import_new_conversations(store, data, skip_present=not duplicate)
    safe_echo(import_summary(outcome.imported, outcome.skipped))


def import_summary(ids: list[int], skipped: int) -> str:
    """"imported 3 conversations (ids 7-9), skipped 2 already present"."""
    noun = "conversation" if len(ids) == 1 else "conversations"
    line = f"imported {len(ids)} {noun}"
    if ids:
        line += f" ({'id' if len(ids) == 1 else 'ids'} {_id_ranges(ids)})"
    if skipped:
        line += f", skipped {skipped} already present"
    return line


def _id_ranges(ids: list[int]) -> str:
    """7, 8, 9, 12 as "7-9, 12" (one import's ids are usually consecutive)."""
    runs: list[list[int]] = []
    for id in ids:
        if runs and id == runs[-1][-1] + 1:
            runs[-1].append(id)
        else:
            runs.append([id])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


# ---- rm ------------------------------------------------------------------------------------


@history.command("rm")
@click.argument("conversation_ids", nargs=-1, type=CONVERSATION_ID, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(conversation_ids: tuple[int, ...], yes: bool) -> None:
    """Delete conversations (with all their messages) for good."""
    with _open_store() as store:
        conversations = [store.conversation(i) for i in dict.fromkeys(conversation_ids)]
        if not yes:
            for c in conversations:
                safe_echo(f"{c.id:>5}  {_safe(c.title or '(untitled)')}  "
                           f"({c.message_count or 0} messages)")
            noun = "this conversation" if len(conversations) == 1 else \
                f"these {len(conversations)} conversations"
            click.confirm(f"Delete {noun}?", abort=True)
        for c in conversations:
            store.delete_conversation(c.id)
            safe_echo(f"deleted conversation {c.id}")
