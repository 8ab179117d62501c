"""`localr1 history`: list, show, search, export, import and delete saved conversations.

The main CLI registers the group (`cli.add_command(history)`) and turns LocalR1Error into one
line and exit 1. Only click is imported here; the store loads inside each command.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from localr1.errors import LocalR1Error

if TYPE_CHECKING:
    from localr1.store.database import Conversation, Message, Store

# Snippet highlight markers for the terminal: control characters no stored text keeps as is
# (visible_controls escapes any in the text itself), swapped for bold afterwards.
_MARK_START, _MARK_END = "\x02", "\x03"


class HistoryFileError(LocalR1Error):
    """An export or import file that cannot be written, read or parsed."""


def _open_store() -> Store:
    from localr1.paths import app_paths
    from localr1.store.database import Store

    return Store.open(app_paths().db_path)


def _local_time(iso: str) -> str:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso[:16]


def _safe(text: str) -> str:
    from localr1.terminal_text import visible_controls

    return visible_controls(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


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
    with _open_store() as store:
        conversations = store.list_conversations(limit=limit,
                                                 include_archived=include_archived)
    if json_output:
        _echo_json([c.as_dict() for c in conversations])
        return
    if not conversations:
        click.echo("No saved conversations.")
        return
    click.echo(f"  {'ID':>5}  {'UPDATED':<16}  {'MODEL':<24}  {'MSGS':>5}  TITLE")
    for c in conversations:
        mark = "*" if c.pinned else " "
        model = _safe(_one_line(c.model or "-"))
        if len(model) > 24:
            model = model[:23] + "…"
        title = _safe(c.title or "(untitled)") + ("  [archived]" if c.archived else "")
        click.echo(f"{mark} {c.id:>5}  {_local_time(c.updated_at):<16}  {model:<24}  "
                   f"{c.message_count or 0:>5}  {title}")


# ---- show ----------------------------------------------------------------------------------


@history.command("show")
@click.argument("conversation_id", type=int)
@click.option("--json", "output", flag_value="json", help="Print the shown branch as JSON.")
@click.option("--markdown", "output", flag_value="markdown", help="Print it as Markdown.")
@click.option("--reasoning", is_flag=True, help="Include the models' reasoning.")
def show(conversation_id: int, output: str | None, reasoning: bool) -> None:
    """Print a conversation (the branch currently shown in the chat)."""
    with _open_store() as store:
        if output == "markdown":
            click.echo(store.conversation_markdown(conversation_id,
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
    click.secho(_safe(conversation.title or "(untitled)"), bold=True)
    details = [f"conversation {conversation.id}"]
    if conversation.model:
        details.append(f"model {_safe(conversation.model)}")
    details.append(f"updated {_local_time(conversation.updated_at)}")
    click.echo(" · ".join(details))
    if conversation.system_prompt:
        click.echo()
        click.secho("System prompt:", bold=True)
        click.echo(_safe(conversation.system_prompt.strip()))
    for message in messages:
        click.echo()
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
        click.secho(header + ":", bold=True)
        if reasoning and message.reasoning:
            seconds = message.thinking_seconds
            took = f" ({seconds:.0f} s)" if seconds is not None else ""
            click.secho(f"[reasoning{took}]", dim=True)
            click.secho(_safe(message.reasoning.strip()), dim=True)
            click.secho("[/reasoning]", dim=True)
        click.echo(_safe(message.content.strip()))


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
    highlight = ("**", "**") if json_output else (_MARK_START, _MARK_END)
    with _open_store() as store:
        hits = store.search(text, limit=limit, include_reasoning=reasoning,
                            highlight=highlight)
    if json_output:
        _echo_json([hit.as_dict() for hit in hits])
        return
    if not hits:
        click.echo("No matches.")
        return
    for hit in hits:
        where = "title" if hit.message_id is None else f"message {hit.message_id}, {hit.role}"
        click.echo(click.style(f"{hit.conversation_id:>5}", bold=True) + "  "
                   + _safe(hit.title or "(untitled)") + click.style(f"  ({where})", dim=True))
        click.echo("       " + _highlighted(_one_line(hit.snippet)))


def _highlighted(snippet: str) -> str:
    parts = []
    for n, chunk in enumerate(snippet.split(_MARK_START)):
        if n == 0:
            parts.append(_safe(chunk.replace(_MARK_END, "")))
            continue
        match, _, rest = chunk.partition(_MARK_END)
        parts.append(click.style(_safe(match), bold=True, fg="yellow") + _safe(rest))
    return "".join(parts)


# ---- export / import -----------------------------------------------------------------------


@history.command("export")
@click.argument("conversation_id", type=int, required=False)
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

    JSON exports round-trip through `localr1 history import`.
    """
    import json

    if (conversation_id is None) == (not export_all):
        raise click.UsageError("give a conversation ID or --all (not both)")
    if fmt is None:
        fmt = "md" if output.lower().endswith((".md", ".markdown")) else "json"
    with _open_store() as store:
        if export_all:
            ids = [c.id for c in _all_conversations(store)]
        else:
            ids = [store.conversation(conversation_id).id]
        if fmt == "md":
            text = "\n---\n\n".join(store.conversation_markdown(i, include_reasoning=reasoning)
                                    for i in ids)
        else:
            from localr1.store.database import EXPORT_BUNDLE_FORMAT, EXPORT_VERSION

            exports = [store.export_conversation(i) for i in ids]
            data: Any = exports[0] if not export_all else {
                "format": EXPORT_BUNDLE_FORMAT, "version": EXPORT_VERSION,
                "conversations": exports}
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise HistoryFileError(f"{output}: {exc.strerror or exc}") from None
    noun = "conversation" if len(ids) == 1 else "conversations"
    click.echo(f"wrote {len(ids)} {noun} to {output}", err=True)


def _all_conversations(store: Store) -> list[Conversation]:
    found: list[Conversation] = []
    while True:
        page = store.list_conversations(limit=500, offset=len(found), include_archived=True)
        found += page
        if len(page) < 500:
            return found


@history.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def import_command(file: str) -> None:
    """Add conversations from a JSON export (one, a list, or `export --all`) under new ids.

    Prints each new conversation id on its own line.
    """
    import json

    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HistoryFileError(f"{file}: {_one_line(reason)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HistoryFileError(f"{file}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                               f"{exc.msg})") from None
    with _open_store() as store:
        ids = store.import_conversations(data)
    for new_id in ids:
        click.echo(new_id)
    noun = "conversation" if len(ids) == 1 else "conversations"
    click.echo(f"imported {len(ids)} {noun}", err=True)


# ---- rm ------------------------------------------------------------------------------------


@history.command("rm")
@click.argument("conversation_ids", nargs=-1, type=int, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(conversation_ids: tuple[int, ...], yes: bool) -> None:
    """Delete conversations (with all their messages) for good."""
    with _open_store() as store:
        conversations = [store.conversation(i) for i in dict.fromkeys(conversation_ids)]
        if not yes:
            for c in conversations:
                click.echo(f"{c.id:>5}  {_safe(c.title or '(untitled)')}  "
                           f"({c.message_count or 0} messages)")
            noun = "this conversation" if len(conversations) == 1 else \
                f"these {len(conversations)} conversations"
            click.confirm(f"Delete {noun}?", abort=True)
        for c in conversations:
            store.delete_conversation(c.id)
            click.echo(f"deleted conversation {c.id}")
