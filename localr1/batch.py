"""The batch runner: JSONL or text prompts in, one JSONL record per prompt out.

Resumable: with an output file, ids already answered there are skipped and new records are
appended and flushed one by one, so `kill -9` loses at most the records in flight. A malformed
input line becomes an error record and the batch goes on (once: a rerun finds it written).
Records are decoded `parallel` at a time as separate sequences of one llama.cpp context (see
parallel_decoder), or with an endpoint sent `parallel` at a time (see remote_decoder).
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import IO, Any

from localr1.chat_message import ChatMessage
from localr1.chat_session import speculative_summary
from localr1.config import checked_setting
from localr1.engine.events import (
    AnswerDelta,
    Event,
    GenerationParams,
    ReasoningDelta,
    TurnDone,
)
from localr1.engine.llama_engine import Engine
from localr1.engine.remote_decoder import RemoteDecoder, RemoteRequest, RequestFailed
from localr1.engine.remote_engine import RemoteEngine
from localr1.engine.turn_notes import turn_notes
from localr1.errors import ContextOverflowError, LocalR1Error


class BatchInputError(LocalR1Error):
    """Input that stops the whole batch before it starts (duplicate ids, unreadable file)."""


class BatchOutputError(LocalR1Error):
    """The output cannot be written (a full disk, a closed pipe): the batch stops."""


_PARAM_NAMES = {f.name for f in fields(GenerationParams)}


@dataclass(frozen=True)
class BatchItem:
    """One prompt to answer, or (with `error`) an input line that could not be used."""

    id: Any
    line: int
    messages: tuple[ChatMessage, ...] = ()
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class BatchSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"batch: {self.done} done, {self.failed} failed, {self.skipped} skipped; "
                f"{self.completion_tokens} tokens in {self.seconds:.1f} s "
                f"({self.tokens_per_second:.1f} tokens/s)")


# ---- input ---------------------------------------------------------------------------------


def read_items(lines: Iterable[str], *, kind: str = "auto",
               template: str | None = None) -> list[BatchItem]:
    """Parse input lines: `kind` is "jsonl", "text" or "auto" (JSONL if the first non-blank
    line starts with "{"). Raises BatchInputError for duplicate ids; bad lines become items
    with an error."""
    numbered = [(n, line.rstrip("\n")) for n, line in enumerate(lines, start=1)]
    if kind == "auto":
        first = next((text.lstrip() for _, text in numbered if text.strip()), "")
        kind = "jsonl" if first.startswith("{") else "text"
    items = [_json_item(n, text, template) if kind == "jsonl" else _text_item(n, text, template)
             for n, text in numbered if text.strip()]
    _check_unique_ids(items)
    return items


def _text_item(number: int, text: str, template: str | None) -> BatchItem:
    prompt = _apply_template(template, text, number)
    return BatchItem(id=number, line=number, messages=(ChatMessage("user", prompt),))


def _json_item(number: int, text: str, template: str | None) -> BatchItem:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BatchItem(id=None, line=number, error=f"line {number}: not valid JSON: {exc.msg} "
                                                     f"(column {exc.colno})")
    if not isinstance(data, dict):
        return BatchItem(id=None, line=number, error=f"line {number}: expected a JSON object")
    item_id = data.get("id", number)
    if not isinstance(item_id, str | int) or isinstance(item_id, bool):
        return BatchItem(id=None, line=number, error=f"line {number}: id must be a string or "
                                                     "an integer")

    def bad(problem: str) -> BatchItem:
        return BatchItem(id=item_id, line=number, error=f"line {number}: {problem}")

    system = data.get("system")
    if system is not None and not isinstance(system, str):
        return bad("system must be a string")
    params = data.get("params", {})
    if not isinstance(params, dict) or set(params) - _PARAM_NAMES:
        unknown = sorted(set(params) - _PARAM_NAMES) if isinstance(params, dict) else []
        return bad(f"params must be an object of {', '.join(sorted(_PARAM_NAMES))}"
                   + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    try:
        params = checked_params(params)
    except ValueError as exc:
        return bad(str(exc))
    if "messages" in data:
        messages = data["messages"]
        if not (isinstance(messages, list) and messages and all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in messages)):
            return bad("messages must be a list of {role, content} objects")
        if messages[-1]["role"] != "user":
            return bad("the last message must be the user's")
        chat = tuple(ChatMessage(m["role"], m["content"]) for m in messages)
    elif isinstance(data.get("prompt"), str) and data["prompt"].strip():
        prompt = _apply_template(template, data["prompt"], item_id)
        chat = (ChatMessage("user", prompt),)
    else:
        return bad('no prompt: give "prompt" (a non-empty string) or "messages"')
    return BatchItem(id=item_id, line=number, messages=chat, system=system, params=params)


def checked_params(params: dict[str, Any]) -> dict[str, Any]:
    """A record's params, each checked like the same setting in config.toml and on the
    command line (type and range: NaN, inf and negative counts are refused); ValueError."""
    checked = {}
    for key, value in params.items():
        if key == "seed" and value is None:  # null: a random seed, as without params
            checked[key] = None
            continue
        try:
            checked[key] = checked_setting(key, value)
        except ValueError as exc:
            raise ValueError(f"params.{key} {exc}") from None
    return checked


_PLACEHOLDER = re.compile(r"\{(input|id)\}")


def _apply_template(template: str | None, text: str, item_id: Any) -> str:
    # One pass, not str.format (prompts are full of braces) nor two replaces (a prompt that
    # holds "{id}" must keep it).
    if template is None:
        return text
    values = {"input": text, "id": str(item_id)}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def _check_unique_ids(items: list[BatchItem]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        if item.id is None:
            continue
        key = id_key(item.id)
        if key in seen:
            raise BatchInputError(f"duplicate id {item.id!r} on lines {seen[key]} and "
                                  f"{item.line}; ids must be unique")
        seen[key] = item.line


def id_key(item_id: Any) -> str:
    return json.dumps(item_id)


# ---- output --------------------------------------------------------------------------------


def items_to_resume(items: list[BatchItem], path: Path) -> list[BatchItem]:
    """`items` less those an earlier run's output already settles: ids answered there, and
    input lines whose same error record is there (a rerun would only write it again)."""
    answered, input_errors = _earlier_records(path)
    return [item for item in items
            if not (item.id is not None and id_key(item.id) in answered)
            and not (item.error is not None and _error_key(item.id, item.line, item.error)
                     in input_errors)]


def _earlier_records(path: Path) -> tuple[set[str], set[tuple[str, Any, Any]]]:
    """The answered ids and the error records' keys in an earlier run's output.

    Only a regular file is read back: /dev/stdout, a pipe or /dev/full have no earlier run
    to resume (and reading them would block or never end)."""
    answered: set[str] = set()
    errors: set[tuple[str, Any, Any]] = set()
    if not path.is_file():
        return answered, errors
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if not isinstance(record, dict) or "id" not in record:
            continue
        if record.get("error") is None:
            answered.add(id_key(record["id"]))
        elif "line" in record:
            errors.add(_error_key(record["id"], record["line"], record["error"]))
    return answered, errors


def _error_key(item_id: Any, line: Any, error: Any) -> tuple[str, Any, Any]:
    return id_key(item_id), json.dumps(line), json.dumps(error)


def open_output_for_append(path: Path) -> IO[str]:
    """Open for appending, first cutting off a last line that a kill left unfinished (in a
    regular file only: anything else is written to as it is)."""
    try:
        if path.is_file():
            with open(path, "rb+") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise BatchOutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def error_record(item: BatchItem, model: str, message: str) -> dict[str, Any]:
    return {"id": item.id, "model": model, "answer": None, "reasoning": None,
            "finish_reason": None, "usage": None, "timings": None, "speculative": None,
            "error": message, "line": item.line}


# ---- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    model_label: str
    params: GenerationParams
    parallel: int = 1
    n_ctx_per_sequence: int = 4096
    threads: int = 0  # 0: the engine's (measured free cores)
    system: str | None = None
    seed: int | None = None  # per-record seeds derive from it and the record id
    draft_label: str | None = None  # the draft model's name as the user knows it, or "lookup"


def record_seed(seed: int, item_id: Any) -> int:
    """A record's own seed: the same whatever the order of the batch or its parallelism
    (though another --parallel batches the arithmetic differently: near-ties may differ)."""
    return zlib.crc32(f"{seed}:{id_key(item_id)}".encode()) & 0x7FFFFFFF


def run_batch(engine: Engine | RemoteEngine, items: list[BatchItem], options: BatchOptions,
              write: Callable[[dict[str, Any], BatchItem], None],
              progress: Callable[[BatchSummary, int], None] | None = None,
              cancel: threading.Event | None = None,
              save: Callable[[BatchItem, list[Event]], None] | None = None) -> BatchSummary:
    """Answer `items`, calling `write(record, item)` as each completes (in completion order)
    and, before that, `save(item, events)` for each answered one (the answer as engine events,
    for `ChatSession.save_answered`). With a RemoteEngine (`--endpoint`), `parallel` requests
    are in flight at once."""
    from localr1.engine.parallel_decoder import ParallelDecoder

    remote = isinstance(engine, RemoteEngine)

    summary = BatchSummary()
    started = time.perf_counter()
    total = len(items)

    def report() -> None:
        summary.seconds = time.perf_counter() - started
        if progress:
            progress(summary, total)

    requests = []
    by_key: dict[str, tuple[BatchItem, dict[str, str]]] = {}
    for item in items:
        if item.error:
            write(error_record(item, options.model_label, item.error), item)
            summary.failed += 1
            continue
        try:
            request = _remote_request(item, options) if remote else \
                _request(engine, item, options)
        except (LocalR1Error, ValueError) as exc:
            write(error_record(item, options.model_label, f"line {item.line}: {exc}"), item)
            summary.failed += 1
            continue
        requests.append(request)
        by_key[request.key] = (item, {"reasoning": "", "answer": ""})
    report()

    model_notes = [engine.info.format_note] if engine.info.format_note else []
    # The draft model's name or "lookup"; None: no speculation.
    draft = (options.draft_label or engine.info.draft) if engine.info.draft else None

    def sink(key: str, event) -> None:
        item, texts = by_key[key]
        if isinstance(event, ReasoningDelta):
            texts["reasoning"] += event.text
        elif isinstance(event, AnswerDelta):
            texts["answer"] += event.text
        elif isinstance(event, RequestFailed):  # the endpoint failed it, after its retries
            write(error_record(item, options.model_label, event.message), item)
            summary.failed += 1
            report()
        elif isinstance(event, TurnDone):
            stats = event.stats
            if stats.finish_reason == "cancelled":
                return  # not written: a rerun answers it
            record = _record(item, options.model_label, texts, stats,
                             [*model_notes, *turn_notes(stats, remote=remote)], draft)
            if save is not None and record["error"] is None:
                save(item, _answer_events(texts, event))
            write(record, item)
            summary.completion_tokens += stats.completion_tokens
            if record["error"]:
                summary.failed += 1
            else:
                summary.done += 1
            report()

    decoder = RemoteDecoder(engine, options.parallel) if remote \
        else ParallelDecoder(engine, options.parallel, options.n_ctx_per_sequence,
                             options.threads)
    with decoder:
        decoder.run(requests, sink, cancel)
    report()
    return summary


def _answer_events(texts: dict[str, str], done: TurnDone) -> list[Event]:
    reasoning = [ReasoningDelta(texts["reasoning"])] if texts["reasoning"] else []
    return [*reasoning, AnswerDelta(texts["answer"]), done]


def _remote_request(item: BatchItem, options: BatchOptions) -> RemoteRequest:
    """A record for an endpoint: the server fits the prompt to its own context."""
    params = replace(options.params, **item.params) if item.params else options.params
    return RemoteRequest(key=id_key(item.id), messages=item.messages, params=params,
                         system=item.system if item.system is not None else options.system,
                         seed=record_seed(options.seed, item.id)
                         if options.seed is not None else None)


def _request(engine: Engine, item: BatchItem, options: BatchOptions):
    from localr1.engine.parallel_decoder import SequenceRequest

    params = replace(options.params, **item.params) if item.params else options.params
    n_ctx = options.n_ctx_per_sequence
    system = item.system if item.system is not None else options.system
    prompt = engine.prepare_prompt(item.messages, params, system_prompt=system, n_ctx=n_ctx)
    if prompt.dropped_messages:  # a record is answered whole or not at all
        raise ContextOverflowError(f"the messages need more than the {n_ctx}-token context; "
                                   "raise --ctx")
    seed = record_seed(options.seed, item.id) if options.seed is not None else None
    return SequenceRequest(key=id_key(item.id), prompt=prompt, params=params, seed=seed)


def _record(item: BatchItem, model: str, texts: dict[str, str], stats,
            notes: list[str], draft: str | None = None) -> dict[str, Any]:
    answer = texts["answer"]
    error = None
    if not answer.strip():
        why = "it stopped while still reasoning" if stats.reasoning_truncated else \
            f"finish reason: {stats.finish_reason}"
        error = f"the model gave no answer ({why})"
    return {
        "id": item.id,
        "model": model,
        "answer": answer,
        "reasoning": texts["reasoning"],
        "finish_reason": stats.finish_reason,
        "usage": {"prompt_tokens": stats.prompt_tokens,
                  "completion_tokens": stats.completion_tokens,
                  "reasoning_tokens": stats.reasoning_tokens},
        "timings": {"ttft_ms": round(stats.ttft_seconds * 1000, 1),
                    "tokens_per_second": round(stats.tokens_per_second, 2),
                    "seconds": round(stats.total_seconds, 3)},
        "speculative": speculative_summary(stats, draft),  # as `run --json` has it
        "notes": notes,  # as `run --json` has them: a guessed prompt format, why it stopped
        "error": error,
    }


# A longer line is refused rather than read without end (an endless device like /dev/zero).
MAX_LINE_CHARS = 64 << 20


def iter_input_lines(path: Path | None, stdin: IO[str]) -> Iterator[str]:
    if path is None:
        yield from _bounded_lines(stdin, "stdin")
        return
    try:
        with open(path, encoding="utf-8") as f:
            yield from _bounded_lines(f, str(path))
    except OSError as exc:
        raise BatchInputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BatchInputError(f"{path}: not UTF-8 text") from None


def _bounded_lines(stream: IO[str], name: str) -> Iterator[str]:
    number = 0
    while line := stream.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise BatchInputError(f"{name}: line {number} is longer than "
                                  f"{MAX_LINE_CHARS >> 20} MiB")
        yield line
