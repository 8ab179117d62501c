"""`localr1 eval` runs in the history database (table `eval_runs`, migration m005): one row
per model and run, with its scores, so `localr1 eval --history` lists past runs and the TUI's
model manager shows each model's last score.

Values are checked on the way in (rates in [0, 1], finite numbers, plain JSON), so a stored
run always prints; on the way out, JSON an older or foreign writer left unreadable reads as
empty rather than failing the listing. A database opened read-only before m005 has no runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from localr1.store.errors import StoreError
from localr1.store.params import is_valid_text, shown
from localr1.store.records import MAX_ID, utc_now

if TYPE_CHECKING:
    from localr1.store.sqlite_file import SqliteFile

TABLE = "eval_runs"
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class EvalRunRecord:
    """One stored run of one model on one problem set."""

    id: int
    model: str  # the name the model goes by ("r1:7b-q4_k_m", "tiny-r1", an endpoint's)
    set_name: str  # "quick", "gsm8k", "math-500", a JSONL file's name
    set_digest: str  # the problem set's sha256: runs on the same problems compare
    problems: int
    samples: int  # K, samples per problem
    pass_at_1: float  # in [0, 1]
    ci_low: float | None  # the 95 % interval of pass@1; None when not computed
    ci_high: float | None
    cons_at_k: float  # majority vote over the K samples, in [0, 1]
    format_rate: float  # in [0, 1]
    mean_reasoning_tokens: float | None
    seconds_per_sample: float | None
    params: dict[str, Any]  # temperature, top_p, max_tokens, seed
    solved: tuple[str, ...]  # ids of the problems solved by majority vote
    results_path: str | None  # the -o file, if any
    started_at: str  # ISO-8601 UTC
    finished_at: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["solved"] = list(self.solved)
        return data


def add_eval_run(store: SqliteFile, *, model: str, set_name: str, set_digest: str,
                 problems: int, samples: int, pass_at_1: float, cons_at_k: float,
                 format_rate: float, ci_low: float | None = None, ci_high: float | None = None,
                 mean_reasoning_tokens: float | None = None,
                 seconds_per_sample: float | None = None,
                 params: Mapping[str, Any] | None = None, solved: Iterable[str] = (),
                 results_path: str | None = None, started_at: datetime | str | None = None,
                 finished_at: datetime | str | None = None) -> EvalRunRecord:
    """Store a finished run (one short transaction) and return it as read back.
    `finished_at` defaults to now, `started_at` to `finished_at`. StoreError (one line) for a
    value out of range: a rate outside [0, 1], NaN, a negative count, non-JSON params."""
    finished = _timestamp("finished_at", finished_at if finished_at is not None else utc_now())
    solved_ids = tuple(solved)
    columns = {
        "model": _text("model", model),
        "set_name": _text("set_name", set_name),
        "set_digest": _text("set_digest", set_digest),
        "problems": _count("problems", problems),
        "samples": _count("samples", samples),
        "pass_at_1": _rate("pass_at_1", pass_at_1),
        "ci_low": _rate("ci_low", ci_low, optional=True),
        "ci_high": _rate("ci_high", ci_high, optional=True),
        "cons_at_k": _rate("cons_at_k", cons_at_k),
        "format_rate": _rate("format_rate", format_rate),
        "mean_reasoning_tokens": _amount("mean_reasoning_tokens", mean_reasoning_tokens),
        "seconds_per_sample": _amount("seconds_per_sample", seconds_per_sample),
        "params": _json_object(params or {}),
        "solved": _solved(solved_ids, problems),
        "results_path": None if results_path is None else _text("results_path", results_path),
        "started_at": _timestamp("started_at", started_at) if started_at is not None
        else finished,
        "finished_at": finished,
    }
    if (ci_low is None) != (ci_high is None):
        raise StoreError("eval run: give both ends of the pass@1 interval, or neither")
    if ci_low is not None and ci_high is not None and ci_low > ci_high:
        raise StoreError(f"eval run: the pass@1 interval is upside down ({ci_low} > {ci_high})")

    def insert(db: Any) -> int:
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        return db.execute(f"INSERT INTO {TABLE} ({names}) VALUES ({marks})",
                          tuple(columns.values())).lastrowid

    run_id = store._write(insert)
    return _record(store._rows(f"SELECT * FROM {TABLE} WHERE id = ?", (run_id,))[0])


def list_eval_runs(store: SqliteFile, *, model: str | None = None,
                   limit: int | None = DEFAULT_LIMIT) -> list[EvalRunRecord]:
    """Past runs, the newest first; only `model`'s (its name, any case) when given;
    at most `limit` (None: all)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 0 <= limit <= MAX_ID):
        raise StoreError(f"eval runs: the limit must be a whole number, not {shown(limit)}")

    def read(db: Any) -> list[dict[str, Any]]:
        if not _has_table(db):
            return []
        where, values = ("WHERE model = ? COLLATE NOCASE", [model]) if model is not None \
            else ("", [])
        cursor = db.execute(f"SELECT * FROM {TABLE} {where} "
                            "ORDER BY finished_at DESC, id DESC LIMIT ?",
                            (*values, -1 if limit is None else limit))
        return _dicts(cursor)

    return [_record(row) for row in store._read(read)]


def last_eval_scores(store: SqliteFile) -> dict[str, EvalRunRecord]:
    """Each model's newest run, by the model's name as stored."""
    def read(db: Any) -> list[dict[str, Any]]:
        if not _has_table(db):
            return []
        # The index on (model, finished_at) answers each model's newest row.
        cursor = db.execute(
            f"SELECT * FROM {TABLE} AS run WHERE run.id = (SELECT newest.id FROM {TABLE} "
            "AS newest WHERE newest.model = run.model "
            "ORDER BY newest.finished_at DESC, newest.id DESC LIMIT 1)")
        return _dicts(cursor)

    return {record.model: record for record in map(_record, store._read(read))}


# -- checks on the way in --


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not is_valid_text(value):
        raise StoreError(f"eval run: {name} must be non-empty text, not {shown(value)}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise StoreError(f"eval run: {name} must be a whole number of at least 1, "
                         f"not {shown(value)}")
    return value


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"eval run: {name} must be a number, not {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range
        number = math.inf
    if not math.isfinite(number):
        raise StoreError(f"eval run: {name} must be a finite number, not {shown(value)}")
    return number


def _rate(name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    number = _finite(name, value)
    if not 0.0 <= number <= 1.0:
        raise StoreError(f"eval run: {name} must be between 0 and 1, not {shown(value)}")
    return number


def _amount(name: str, value: Any) -> float | None:
    if value is None:
        return None
    number = _finite(name, value)
    if number < 0:
        raise StoreError(f"eval run: {name} cannot be negative ({shown(value)})")
    return number


def _json_object(params: Mapping[str, Any]) -> str:
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise StoreError("eval run: params must be an object with text names")
    try:
        text = json.dumps(dict(params), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise StoreError("eval run: params must be plain JSON (finite numbers, text, lists, "
                         "objects)") from None
    if not is_valid_text(text):
        raise StoreError("eval run: params hold text that is not valid UTF-8")
    return text


def _solved(ids: tuple[Any, ...], problems: Any) -> str:
    if not all(isinstance(i, str) and is_valid_text(i) for i in ids):
        raise StoreError("eval run: solved must list problem ids as text")
    if len(set(ids)) != len(ids):
        raise StoreError("eval run: solved lists a problem twice")
    if isinstance(problems, int) and len(ids) > problems:
        raise StoreError(f"eval run: {len(ids)} problems solved out of {problems}")
    return json.dumps(list(ids), ensure_ascii=False)


def _timestamp(name: str, value: datetime | str) -> str:
    """ISO-8601 UTC like the rest of the store; a naive time is taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise StoreError(f"eval run: {name} is not an ISO-8601 time: {shown(value)}") \
                from None
    if not isinstance(value, datetime):
        raise StoreError(f"eval run: {name} must be a time, not {shown(value)}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


# -- reading --


def _has_table(db: Any) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (TABLE,)).fetchone() is not None


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]


def _record(row: dict[str, Any]) -> EvalRunRecord:
    params = _loaded(row["params"])
    solved = _loaded(row["solved"])
    return EvalRunRecord(
        id=row["id"], model=row["model"], set_name=row["set_name"],
        set_digest=row["set_digest"], problems=row["problems"], samples=row["samples"],
        pass_at_1=row["pass_at_1"], ci_low=row["ci_low"], ci_high=row["ci_high"],
        cons_at_k=row["cons_at_k"], format_rate=row["format_rate"],
        mean_reasoning_tokens=row["mean_reasoning_tokens"],
        seconds_per_sample=row["seconds_per_sample"],
        params=params if isinstance(params, dict) else {},
        solved=tuple(i for i in solved if isinstance(i, str)) if isinstance(solved, list)
        else (),
        results_path=row["results_path"], started_at=row["started_at"],
        finished_at=row["finished_at"])


def _loaded(text: str | None) -> Any:
    try:
        return json.loads(text or "null")
    except (ValueError, RecursionError):
        return None
