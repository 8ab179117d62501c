"""`run --json-schema FILE` and `batch --json-schema FILE` with local models: the answer is JSON
that follows the schema (llama.cpp grammar after the think block); a bad file is one line."""

from __future__ import annotations

import json

import pytest

from tests.test_endpoint import assert_one_line_error, localr1, records

SCHEMA = {"type": "object", "properties": {"city": {"enum": ["Paris", "Madrid", "Rome"]}},
          "required": ["city"], "additionalProperties": False}


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_run_answers_json_that_follows_the_schema(smollm2_model, schema_file):
    result = localr1("run", "-m", smollm2_model, "--json-schema", schema_file, "--seed", "1",
                     "--max-tokens", "40", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"city"} and answer["city"] in SCHEMA["properties"]["city"]["enum"]


def test_batch_answers_json_that_follows_the_schema(tmp_path, smollm2_model, schema_file):
    source = tmp_path / "in.txt"
    source.write_text("Capital of France?\nCapital of Spain?\n")
    result = localr1("batch", source, "-m", smollm2_model, "--json-schema", schema_file,
                     "--parallel", "2", "--seed", "1", "--max-tokens", "40")
    assert result.returncode == 0, result.stderr
    answered = records(result.stdout)
    assert len(answered) == 2
    for record in answered:
        assert json.loads(record["answer"])["city"] in SCHEMA["properties"]["city"]["enum"]


@pytest.mark.parametrize("content, words", [
    (None, ["cannot read"]),
    ("{not json", ["is not a JSON schema"]),
    ("[1, 2]", ["must be an object"]),
    ("huge", ["over 1 MB"]),  # read with a cap: /dev/zero must not fill the memory
])
def test_a_bad_schema_file_is_one_line(tmp_path, r1_prefill_model, content, words):
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(" " * (2 << 20) if content == "huge" else content)
    source = tmp_path / "in.txt"
    source.write_text("hi\n")
    assert_one_line_error(localr1("run", "-m", r1_prefill_model, "--json-schema", path, "hi"),
                          *words)
    assert_one_line_error(localr1("batch", source, "-m", r1_prefill_model, "--json-schema",
                                  path), *words)
