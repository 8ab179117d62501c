"""The history database's schema: sqlite-utils migrations, applied in order on open.

Never edit a migration that has shipped; add the next one (and its fixture, see
tests/fixtures/make_store_fixture.py).
"""

from __future__ import annotations

import json

# isort: off
from localr1.store import pandas_free  # noqa: F401  (before sqlite_utils)
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations
# isort: on

from localr1.store.params import SAMPLING, sampling_value

MIGRATIONS = Migrations("localr1")


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    # active_leaf_id -> messages is circular on purpose: SET NULL keeps it from dangling.
    db.executescript("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT,
            model TEXT,
            system_prompt TEXT,
            params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
            archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
            active_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            reasoning TEXT,
            thinking_seconds REAL,
            model TEXT,
            finish_reason TEXT
                CHECK (finish_reason IN ('stop', 'length', 'cancelled', 'error', 'incomplete')),
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            reasoning_tokens INTEGER,
            ttft_ms REAL,
            tokens_per_second REAL,
            created_at TEXT NOT NULL,
            batch_id TEXT
        );
        CREATE INDEX conversations_listing ON conversations (pinned DESC, updated_at DESC, id DESC);
        CREATE INDEX messages_conversation ON messages (conversation_id, parent_id);
        CREATE INDEX messages_parent ON messages (parent_id);
        CREATE INDEX messages_batch ON messages (batch_id) WHERE batch_id IS NOT NULL;
    """)
    tokenize = "unicode61 remove_diacritics 2"
    db["conversations"].enable_fts(["title"], fts_version="FTS5", create_triggers=True,
                                   tokenize=tokenize)
    db["messages"].enable_fts(["content", "reasoning"], fts_version="FTS5",
                              create_triggers=True, tokenize=tokenize)


@MIGRATIONS()
def m002_conversation_settings(db: Database) -> None:
    # A conversation's sampling settings (F4 in the TUI, `run -c` applies them) in checked
    # columns, so a stored value is always one `localr1 run` accepts; NULL = the default.
    db.executescript("""
        ALTER TABLE conversations ADD COLUMN temperature REAL
            CHECK (temperature >= 0 AND temperature <= 5);
        ALTER TABLE conversations ADD COLUMN top_p REAL CHECK (top_p > 0 AND top_p <= 1);
        ALTER TABLE conversations ADD COLUMN top_k INTEGER CHECK (top_k >= 0);
        ALTER TABLE conversations ADD COLUMN min_p REAL CHECK (min_p >= 0 AND min_p < 1);
        ALTER TABLE conversations ADD COLUMN max_tokens INTEGER CHECK (max_tokens >= 0);
        ALTER TABLE conversations ADD COLUMN seed INTEGER;
        ALTER TABLE conversations ADD COLUMN reasoning_budget INTEGER
            CHECK (reasoning_budget >= -1);
    """)
    # Move the values v1 kept in the params JSON; ones no version could use are dropped.
    for conversation_id, text in db.execute("SELECT id, params FROM conversations").fetchall():
        try:
            params = json.loads(text or "{}")
        except (ValueError, RecursionError):
            continue
        if not isinstance(params, dict) or not set(params) & set(SAMPLING):
            continue
        values = {name: sampling_value(name, params.pop(name))
                  for name in SAMPLING if name in params}
        assignments = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE conversations SET params = ?, {assignments} WHERE id = ?",
                   (json.dumps(params), *values.values(), conversation_id))


@MIGRATIONS()
def m003_trigram_search(db: Database) -> None:
    # unicode61 reads a run of Chinese or Japanese as one word and drops emoji: a trigram
    # index beside the word index finds any substring (3+ characters) in any script.
    for table, columns in (("conversations", ("title",)), ("messages", ("content", "reasoning"))):
        index = f"{table}_trigram"
        names = ", ".join(columns)
        new = ", ".join(f"new.{c}" for c in columns)
        old = ", ".join(f"old.{c}" for c in columns)
        delete = (f"INSERT INTO {index} ({index}, rowid, {names}) "
                  f"VALUES ('delete', old.id, {old});")
        insert = f"INSERT INTO {index} (rowid, {names}) VALUES (new.id, {new});"
        db.executescript(f"""
            CREATE VIRTUAL TABLE {index} USING fts5 (
                {names}, content = [{table}], content_rowid = id, tokenize = 'trigram');
            CREATE TRIGGER {index}_ai AFTER INSERT ON {table} BEGIN {insert} END;
            CREATE TRIGGER {index}_ad AFTER DELETE ON {table} BEGIN {delete} END;
            CREATE TRIGGER {index}_au AFTER UPDATE OF {names} ON {table}
                BEGIN {delete} {insert} END;
            INSERT INTO {index} ({index}) VALUES ('rebuild');
        """)


@MIGRATIONS()
def m004_finish_reason_repetition(db: Database) -> None:
    # A turn the engine stopped because the model kept repeating itself. SQLite cannot alter
    # a CHECK constraint; its documented way to loosen one edits the table's SQL in place
    # (no rows change, so no table rebuild: a rebuild would fire ON DELETE actions here).
    old = "'error', 'incomplete')"
    new = "'error', 'incomplete', 'repetition')"
    (version,) = db.execute("PRAGMA schema_version").fetchone()
    db.execute("PRAGMA writable_schema = ON")
    try:
        db.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) "
                   "WHERE type = 'table' AND name = 'messages'", (old, new))
        db.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        db.execute("PRAGMA writable_schema = OFF")
    problems = db.execute("PRAGMA integrity_check").fetchall()
    if problems != [("ok",)]:
        raise RuntimeError(f"integrity check failed after m004: {problems[:3]}")


@MIGRATIONS()
def m005_eval_runs(db: Database) -> None:
    # `localr1 eval` runs: one row per model and run, the last one per model shown by the
    # TUI's model manager. The rates are checked here too, so a stored run always prints.
    db.executescript("""
        CREATE TABLE eval_runs (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            set_name TEXT NOT NULL,
            set_digest TEXT NOT NULL,
            problems INTEGER CHECK (problems >= 1),
            samples INTEGER CHECK (samples >= 1),
            pass_at_1 REAL CHECK (pass_at_1 >= 0 AND pass_at_1 <= 1),
            ci_low REAL CHECK (ci_low >= 0 AND ci_low <= 1),
            ci_high REAL CHECK (ci_high >= 0 AND ci_high <= 1),
            cons_at_k REAL CHECK (cons_at_k >= 0 AND cons_at_k <= 1),
            format_rate REAL CHECK (format_rate >= 0 AND format_rate <= 1),
            mean_reasoning_tokens REAL CHECK (mean_reasoning_tokens >= 0),
            seconds_per_sample REAL CHECK (seconds_per_sample >= 0),
            params TEXT,
            solved TEXT,
            results_path TEXT,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX eval_runs_model ON eval_runs (model, finished_at);
    """)


def known_migrations() -> list[str]:
    """The names of the migrations this code knows, oldest first."""
    db = Database(memory=True)
    try:
        return [migration.name for migration in MIGRATIONS.pending(db)]
    finally:
        db.close()


def schema_version() -> int:
    """How many migrations this code knows (the N of tests/fixtures/store_vN.db)."""
    return len(known_migrations())
