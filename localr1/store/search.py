"""Full-text search over titles and messages (FTS5, bm25), safe for any typed text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from localr1.store.errors import StoreError
from localr1.store.records import SearchHit

if TYPE_CHECKING:
    from sqlite_utils import Database

    from localr1.store.database import Store

RANK_WINDOW = 2000  # search ranks at most this many (the newest) matching messages


def fts_query(text: str, *, prefix: bool = False) -> str:
    """User text as an FTS5 query that cannot be a syntax error: every word a quoted phrase.

    Quoting turns AND/OR/NOT/NEAR, `*`, `:`, `-`, `^` and brackets into plain words; words that
    hold no letters or digits become empty phrases, which FTS5 ignores. With `prefix` the last
    word also matches longer words ("gree" finds "greeted"), for a filter box typed into.
    """
    text = text.replace("\x00", " ").encode("utf-8", "ignore").decode("utf-8")
    phrases = ['"' + word.replace('"', '""') + '"' for word in text.split()]
    if prefix and phrases and any(c.isalnum() for c in phrases[-1]):
        phrases[-1] += "*"
    return " ".join(phrases)


def search(store: Store, query: str, *, limit: int = 20, include_reasoning: bool = False,
           highlight: tuple[str, str] = ("**", "**"), prefix: bool = False) -> list[SearchHit]:
    """Titles and message content (reasoning too on request), best bm25 first.

    Every word of `query` must match, as a plain word (FTS syntax is quoted away).
    Snippets wrap the matched words in `highlight`. Archived conversations are searched
    too. A word found in more than RANK_WINDOW messages ranks only the newest
    RANK_WINDOW of them (ranking is per matching row; this keeps a search under ~10 ms).
    """
    match = fts_query(query, prefix=prefix)
    if not match or limit <= 0:
        return []
    message_match = match if include_reasoning else f"{{content}} : ({match})"
    start, end = highlight

    def read(db: Database) -> tuple[list, list]:
        # A title sums up a whole conversation: its matches weigh double.
        titles = db.execute(
            "SELECT f.rowid, c.title, bm25(conversations_fts, 2.0) AS score, "
            "snippet(conversations_fts, 0, ?, ?, '…', 16) "
            "FROM conversations_fts f JOIN conversations c ON c.id = f.rowid "
            "WHERE conversations_fts MATCH ? ORDER BY score LIMIT ?",
            (start, end, match, limit)).fetchall()
        window = db.execute(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?",
            (message_match, RANK_WINDOW - 1)).fetchone()
        # Reasoning counts half when it is searched as well.
        top = db.execute(
            "SELECT rowid, bm25(messages_fts, 1.0, 0.5) AS score FROM messages_fts "
            "WHERE messages_fts MATCH ? AND rowid >= ? ORDER BY score LIMIT ?",
            (message_match, window[0] if window else 0, limit)).fetchall()
        # Snippets only for the hits we return: they are the costly part.
        messages = []
        for message_id, score in top:
            row = db.execute(
                "SELECT m.conversation_id, m.role, c.title, "
                "snippet(messages_fts, -1, ?, ?, '…', 16) FROM messages_fts f "
                "JOIN messages m ON m.id = f.rowid "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE messages_fts MATCH ? AND f.rowid = ?",
                (start, end, message_match, message_id)).fetchone()
            if row is not None:
                messages.append((message_id, score, *row))
        return titles, messages

    try:
        titles, messages = store._read(read)
    except StoreError as exc:
        if "fts5" in str(exc):  # last resort: a query FTS5 still refuses finds nothing
            return []
        raise
    hits = [SearchHit(cid, None, title, snippet or "", rank)
            for cid, title, rank, snippet in titles]
    hits += [SearchHit(cid, mid, title, snippet or "", score, role)
             for mid, score, cid, role, title, snippet in messages]
    hits.sort(key=lambda hit: (hit.rank, hit.message_id is not None, hit.message_id or 0))
    return hits[:limit]
