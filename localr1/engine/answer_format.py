"""The shape an answer must take: JSON, or JSON that follows a schema, as a llama.cpp grammar.

The grammar constrains only the answer, after `</think>`: the model still reasons freely (a
grammar from the first token would forbid the think block and break R1). Built from OpenAI's
`response_format` (`serve`) or a schema file (`run`/`batch --json-schema`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from localr1.errors import LocalR1Error

# A schema is a few kB; the cap keeps `--json-schema /dev/zero` from filling the memory.
MAX_SCHEMA_BYTES = 1 << 20


class AnswerFormatError(LocalR1Error):
    """A response_format or JSON schema we cannot turn into a grammar."""


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's `{"type": "json_object"}`)."""
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


def json_schema_grammar(schema: Any) -> str:
    """JSON that follows `schema` (a JSON Schema as a dict)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise AnswerFormatError("the JSON schema must be an object")
    _check_repetition_bounds(schema)
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise AnswerFormatError(f"unsupported JSON schema: {exc}") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise AnswerFormatError(f"the JSON schema makes a grammar over "
                                f"{MAX_GRAMMAR_CHARS >> 20} MB; simplify it")
    return grammar


# The converter writes a bounded repetition out item by item: {"minItems": 10**8} would be GBs.
MAX_REPETITION = 4096
MAX_GRAMMAR_CHARS = 1 << 20
_BOUND_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties",
               "maxProperties", "minContains", "maxContains")
_PATTERN_BOUND = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _check_repetition_bounds(node: Any) -> None:
    """AnswerFormatError for a count bound (or a regex {m,n}) over MAX_REPETITION."""
    stack = [node]
    while stack:  # not recursive: a deeply nested schema must not overflow the stack
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key in _BOUND_KEYS and isinstance(value, int | float) and \
                    value > MAX_REPETITION:
                raise AnswerFormatError(f"the JSON schema's {key} {value} is over "
                                        f"{MAX_REPETITION}")
            if key == "pattern" and isinstance(value, str):
                for match in _PATTERN_BOUND.finditer(value):
                    if any(n and int(n) > MAX_REPETITION for n in match.groups()):
                        raise AnswerFormatError(f"the JSON schema's pattern repeats more "
                                                f"than {MAX_REPETITION} times")
            stack.append(value)


def grammar_for_response_format(response_format: Any) -> str | None:
    """The grammar for an OpenAI `response_format` value; None for plain text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise AnswerFormatError("response_format must be an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise AnswerFormatError("response_format json_schema needs a 'schema' object")
        return json_schema_grammar(spec["schema"])
    raise AnswerFormatError(f"unknown response_format type {kind!r} "
                            "(use text, json_object or json_schema)")


def read_schema_file(path: Path) -> dict[str, Any]:
    """A JSON schema file (`--json-schema FILE`), read once and capped (a FIFO or
    `<(echo ...)` can be read only once); AnswerFormatError (one line) when it is no schema."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SCHEMA_BYTES + 1)
    except OSError as exc:
        raise AnswerFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SCHEMA_BYTES:
        raise AnswerFormatError(f"{path} is over {MAX_SCHEMA_BYTES >> 20} MB: not a JSON schema")
    try:
        schema = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnswerFormatError(f"{path} is not a JSON schema: {exc}") from None
    if not isinstance(schema, dict):
        raise AnswerFormatError(f"{path}: the JSON schema must be an object")
    return schema
