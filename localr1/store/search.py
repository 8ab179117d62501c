"""Full-text search over titles and messages, safe for any typed text, in any script.

Words in scripts written with spaces go through the word index (FTS5 unicode61: whole words,
diacritics folded, bm25). unicode61 reads a run of Chinese or Japanese as one long word and
drops emoji, so query words holding those go through the trigram index beside it (m003), which
finds any substring of 3+ characters; shorter ones (中文, 🚀) are matched with LIKE over the
same rows, bounded.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localr1.store.errors import StoreError
from localr1.store.records import SearchHit

if TYPE_CHECKING:
    from sqlite_utils import Database

    from localr1.store.database import Store

RANK_WINDOW = 2000  # search ranks at most this many (the newest) matching messages
SCAN_WINDOW = 20_000  # LIKE alone (only 1-2 character CJK/emoji words) reads the newest this many
SNIPPET_CHARS = 64  # a substring-search snippet: about this many characters around the match
# Scripts written without spaces between words (Thai, Lao, Tibetan, Myanmar, Khmer, CJK, kana,
# Hangul, Yi, half/full width forms, CJK extensions B+).
_NO_SPACE_RANGES = ((0x0E00, 0x109F), (0x1780, 0x17FF), (0x2E80, 0xA4CF), (0xAC00, 0xD7AF),
                    (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))


def needs_substring(word: str) -> bool:
    """Whether the word index cannot find `word`: it holds an emoji or other symbol (a
    separator to unicode61) or a character of a script written without spaces."""
    return any(unicodedata.category(char) == "So"
               or any(low <= ord(char) <= high for low, high in _NO_SPACE_RANGES)
               for char in word)


def query_words(text: str) -> list[str]:
    """The words of typed text, NUL and unpaired surrogates removed."""
    return text.replace("\x00", " ").encode("utf-8", "ignore").decode("utf-8").split()


def _phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def fts_query(text: str, *, prefix: bool = False) -> str:
    """User text as an FTS5 query that cannot be a syntax error: every word a quoted phrase.

    Quoting turns AND/OR/NOT/NEAR, `*`, `:`, `-`, `^` and brackets into plain words; words that
    hold no letters or digits become empty phrases, which FTS5 ignores. With `prefix` the last
    word also matches longer words ("gree" finds "greeted"), for a filter box typed into.
    """
    phrases = [_phrase(word) for word in query_words(text)]
    if prefix and phrases and any(c.isalnum() for c in phrases[-1]):
        phrases[-1] += "*"
    return " ".join(phrases)


def search(store: Store, query: str, *, limit: int = 20, include_reasoning: bool = False,
           highlight: tuple[str, str] = ("**", "**"), prefix: bool = False) -> list[SearchHit]:
    """Titles and message content (reasoning too on request), best bm25 first.

    Every word of `query` must match, as a plain word (FTS syntax is quoted away), or for a
    word in Chinese, Japanese, Korean, Thai… or with an emoji, as a substring anywhere.
    Snippets wrap the matches in `highlight`. Archived conversations are searched too. A
    query found in more than RANK_WINDOW messages ranks only the newest RANK_WINDOW of them
    (ranking is per matching row; this keeps a search under ~10 ms).
    """
    words = query_words(query)
    if not words or limit <= 0:
        return []
    try:
        if any(needs_substring(word) for word in words):
            titles, messages = store._read(
                lambda db: _substring_search(db, words, limit, include_reasoning, highlight,
                                             prefix))
        else:
            titles, messages = store._read(
                lambda db: _word_search(db, fts_query(query, prefix=prefix), limit,
                                        include_reasoning, highlight))
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


def _word_search(db: Database, match: str, limit: int, include_reasoning: bool,
                 highlight: tuple[str, str]) -> tuple[list, list]:
    if not match:
        return [], []
    message_match = match if include_reasoning else f"{{content}} : ({match})"
    start, end = highlight
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


# ---- substring search ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Terms:
    """A query's words by how they are matched."""

    word_match: str  # FTS5 query for the word index ("" if none)
    trigram_match: str  # FTS5 query for the trigram index ("" if none)
    like: tuple[str, ...]  # words matched with LIKE (too short for trigrams, or no index)
    needles: tuple[str, ...]  # everything to highlight in a snippet


def _terms(words: list[str], prefix: bool, have_trigrams: bool) -> _Terms:
    plain = [w for w in words if not needs_substring(w) and any(c.isalnum() for c in w)]
    # Quotes and other punctuation around a word are not part of it (「日本」 finds 日本).
    substrings = [s for s in (_trim_punctuation(w) for w in words if needs_substring(w)) if s]
    indexed = [w for w in substrings if len(w) >= 3 and have_trigrams]
    # Only the word being typed is a prefix: a CJK word after it means it is finished.
    word_match = fts_query(" ".join(plain), prefix=prefix and not needs_substring(words[-1]))
    return _Terms(word_match, " ".join(_phrase(w) for w in indexed),
                  tuple(w for w in substrings if w not in indexed),
                  tuple(n for n in map(_trim_punctuation, plain + substrings) if n))


def _trim_punctuation(word: str) -> str:
    start, end = 0, len(word)
    while start < end and unicodedata.category(word[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[start:end]


def _like_pattern(word: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", word) + "%"


def _like_conditions(columns: tuple[str, ...], words: tuple[str, ...]) -> tuple[str, list]:
    """SQL requiring each word in one of `columns` (LIKE: ASCII case-insensitive)."""
    sql, params = [], []
    for word in words:
        sql.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns) + ")")
        params += [_like_pattern(word)] * len(columns)
    return "".join(f" AND {condition}" for condition in sql), params


def _density(texts: tuple[str | None, ...], needles: tuple[str, ...]) -> float:
    """A bm25 stand-in where no index ranks: matched characters per character, negated."""
    found = sum(len(m.group()) for text in texts if text
                for m in _needle_pattern(needles).finditer(text))
    return -found / (sum(len(text or "") for text in texts) + 20)


def _substring_search(db: Database, words: list[str], limit: int, include_reasoning: bool,
                      highlight: tuple[str, str], prefix: bool) -> tuple[list, list]:
    # A database opened read-only before its upgrade has no trigram index yet.
    have_trigrams = db["messages_trigram"].exists()
    terms = _terms(words, prefix, have_trigrams)
    if not (terms.word_match or terms.trigram_match or terms.like):
        return [], []  # only punctuation
    titles = _search_rows(db, terms, "conversations", ("title",), 2.0)
    columns = ("content", "reasoning") if include_reasoning else ("content",)
    candidates = _search_rows(db, terms, "messages", columns, 1.0)
    top = sorted(candidates, key=lambda row: row[1])[:limit]
    messages = []
    for message_id, score in top:
        cid, role, title, *texts = db.execute(
            f"SELECT m.conversation_id, m.role, c.title, {', '.join('m.' + c for c in columns)} "
            "FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ?",
            (message_id,)).fetchone()
        messages.append((message_id, score, cid, role, title,
                         substring_snippet(texts, terms.needles, highlight)))
    title_hits = []
    for cid, score in sorted(titles, key=lambda row: row[1])[:limit]:
        (title,) = db.execute("SELECT title FROM conversations WHERE id = ?", (cid,)).fetchone()
        title_hits.append((cid, title, score, substring_snippet([title], terms.needles,
                                                                highlight)))
    return title_hits, messages


def _search_rows(db: Database, terms: _Terms, table: str, columns: tuple[str, ...],
                 weight: float) -> list[tuple[int, float]]:
    """(id, score) of the newest RANK_WINDOW rows of `table` matching every term."""
    only = "" if len(columns) > 1 else f"{{{columns[0]}}} : "
    like_sql, like_params = _like_conditions(tuple(f"t.{c}" for c in columns), terms.like)
    # Reasoning counts half, like in the word search.
    weights = ", ".join(str(weight if n == 0 else weight / 2) for n in range(len(columns)))
    indexes = [(f"{table}_trigram", terms.trigram_match), (f"{table}_fts", terms.word_match)]
    indexes = [(index, f"{only}({match})") for index, match in indexes if match]
    if not indexes:  # LIKE alone: read the newest SCAN_WINDOW rows at most
        floor = db.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?",
                           (SCAN_WINDOW - 1,)).fetchone()
        rows = db.execute(
            f"SELECT t.id, {', '.join('t.' + c for c in columns)} FROM {table} t "
            f"WHERE t.id >= ?{like_sql} ORDER BY t.id DESC LIMIT ?",
            (floor[0] if floor else 0, *like_params, RANK_WINDOW)).fetchall()
        return [(row[0], weight * _density(row[1:], terms.needles)) for row in rows]
    (driver, match), *others = indexes
    other_sql = "".join(f" AND t.id IN (SELECT rowid FROM {index} WHERE {index} MATCH ?)"
                        for index, _ in others)
    return db.execute(
        f"SELECT t.id, bm25({driver}, {weights}) FROM {driver} d JOIN {table} t ON t.id = d.rowid "
        f"WHERE {driver} MATCH ?{other_sql}{like_sql} ORDER BY d.rowid DESC LIMIT ?",
        (match, *(m for _, m in others), *like_params, RANK_WINDOW)).fetchall()


def _needle_pattern(needles: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = sorted({re.escape(n) for n in needles}, key=len, reverse=True)
    return re.compile("|".join(alternatives), re.IGNORECASE)


def substring_snippet(texts: list[str | None], needles: tuple[str, ...],
                      highlight: tuple[str, str]) -> str:
    """About SNIPPET_CHARS of the first text holding a match, around the first match, with
    every match wrapped in `highlight` (the first text's start when none is found)."""
    pattern = _needle_pattern(needles)
    text = next((t for t in texts if t and pattern.search(t)), texts[0] or "")
    first = pattern.search(text)
    begin = max(0, first.start() - SNIPPET_CHARS // 4) if first else 0
    end = min(len(text), begin + SNIPPET_CHARS)
    begin = max(0, min(begin, end - SNIPPET_CHARS))
    start_mark, end_mark = highlight
    window = pattern.sub(lambda m: start_mark + m.group() + end_mark, text[begin:end])
    return ("…" if begin else "") + window + ("…" if end < len(text) else "")
