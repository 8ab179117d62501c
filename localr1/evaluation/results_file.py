"""The samples of an eval, one JSONL line each, in memory and (with `-o`) in a file.

The file's first line says which set and settings its samples belong to; a rerun with the same
ones continues it (samples already there are not decoded again), other ones are refused in one
line rather than mixed in. A line cut short by a kill is dropped on reopening, and each sample
is flushed as it is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from localr1.batch import open_output_for_append
from localr1.errors import LocalR1Error

FORMAT = "localr1-eval/1"


class ResultsFileError(LocalR1Error):
    """A results file that cannot be read, continued or written."""


def sample_key(model: str, problem_id: str, sample: int) -> tuple[str, str, int]:
    return model, problem_id, sample


def header(set_name: str, set_digest: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "set": set_name, "set_digest": set_digest, "settings": settings}


class ResultsFile:
    """Samples keyed by (model, problem, sample); `path` None keeps them in memory only."""

    def __init__(self, path: Path | None, head: dict[str, Any]) -> None:
        self.path = path
        self.head = head
        self._samples: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._out: IO[str] | None = None
        if path is not None:
            self._open(path)

    def _open(self, path: Path) -> None:
        samples = self._read(path) if path.is_file() else None
        if samples == 0:  # only a header (a run that stopped before its first sample)
            _truncate(path)
        self._out = open_output_for_append(path)  # drops a line a kill cut short
        try:
            if not samples:
                self._write_line(self.head)
        except OSError as exc:
            raise ResultsFileError(f"{path}: cannot write: {exc.strerror or exc}") from None

    def _read(self, path: Path) -> int | None:
        """Load an earlier run's samples; their count (None: an empty file)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ResultsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if not data.strip():
            return None
        # Decoded leniently: a kill may cut the last line inside a character. split("\n"),
        # not splitlines(): a model's text may hold U+2028, which JSON keeps raw.
        lines = data.decode("utf-8", errors="replace").split("\n")
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if not isinstance(first, dict) or first.get("format") != FORMAT:
            raise ResultsFileError(f"{path}: not a localr1 eval results file; give -o a new "
                                   "file name")
        records = []
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run
            if isinstance(record, dict) and _key_of(record) is not None:
                records.append(record)
        same_run = (first.get("set_digest"), first.get("settings")) == \
            (self.head["set_digest"], self.head["settings"])
        if not same_run and records:
            raise ResultsFileError(
                f"{path} holds samples of another run ({_describe(first)}; this one: "
                f"{_describe(self.head)}); use another -o file")
        if not same_run:
            return 0
        for record in records:
            if not record.get("error"):  # a sample that could not be decoded is tried again
                self._samples[_key_of(record)] = record
        return len(records)

    def done_keys(self) -> set[tuple[str, str, int]]:
        return set(self._samples)

    def append(self, sample: dict[str, Any]) -> None:
        self._samples[sample_key(sample["model"], sample["problem"], sample["sample"])] = sample
        if self._out is not None:
            try:
                self._write_line(sample)
            except OSError as exc:
                raise ResultsFileError(f"{self.path}: cannot write: {exc.strerror or exc}") \
                    from None


    def samples(self, model: str, problem_ids: set[str], samples: int) -> list[dict[str, Any]]:
        """`model`'s samples of these problems with a sample index below `samples`."""
        return [record for (name, problem, index), record in self._samples.items()
                if name == model and problem in problem_ids and index < samples]

    def _write_line(self, record: dict[str, Any]) -> None:
        assert self._out is not None
        self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            out, self._out = self._out, None
            try:
                out.close()
            except OSError as exc:
                raise ResultsFileError(f"{self.path}: cannot write: {exc.strerror or exc}") \
                    from None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key_of(record: dict[str, Any]) -> tuple[str, str, int] | None:
    model, problem, sample = record.get("model"), record.get("problem"), record.get("sample")
    if isinstance(model, str) and isinstance(problem, str) and isinstance(sample, int) \
            and not isinstance(sample, bool) and "correct" in record:
        return sample_key(model, problem, sample)
    return None


def _describe(head: dict[str, Any]) -> str:
    settings = head.get("settings") or {}
    parts = [f"set {head.get('set')}"]
    parts += [f"{name} {value}" for name, value in sorted(settings.items())] \
        if isinstance(settings, dict) else []
    return ", ".join(parts)


def _truncate(path: Path) -> None:
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
