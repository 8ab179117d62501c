"""The shape an answer must take: JSON, or JSON that follows a schema, as a llama.cpp grammar.

The grammar constrains only the answer, after `</think>`: the model still reasons freely (a
grammar from the first token would forbid the think block and break R1). Built from OpenAI's
`response_format` (`serve`) or a schema file (`run`/`batch --json-schema`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localr1.errors import LocalR1Error


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
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise AnswerFormatError(f"unsupported JSON schema: {exc}") from None


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


def grammar_for_schema_file(path: Path) -> str:
    """The grammar for a JSON schema file (`--json-schema FILE`)."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnswerFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnswerFormatError(f"{path} is not a JSON schema: {exc}") from None
    return json_schema_grammar(schema)
