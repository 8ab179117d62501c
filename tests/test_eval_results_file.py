"""The eval results file: what a rerun finds there, and what it refuses."""

from __future__ import annotations

import json

import pytest

from localr1.evaluation.results_file import ResultsFile, ResultsFileError, header

HEAD = header("quick", "d" * 64, {"temperature": 0.6, "top_p": 0.95, "max_tokens": 100,
                                  "seed": 0})


def sample(problem: str, index: int, **fields) -> dict:
    return {"model": "m", "problem": problem, "sample": index, "correct": True, **fields}


def test_samples_survive_a_reopen_even_with_unicode_line_separators(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, HEAD) as results:
        results.append(sample("p1", 0, reasoning="a\u2028b\u2029c\x85d"))
        results.append(sample("p2", 0))
    reopened = ResultsFile(path, HEAD)
    reopened.close()
    assert reopened.done_keys() == {("m", "p1", 0), ("m", "p2", 0)}
    (kept,) = reopened.samples("m", {"p1"}, 1)
    assert kept["reasoning"] == "a\u2028b\u2029c\x85d"


def test_a_line_cut_by_a_kill_is_dropped_and_the_file_goes_on(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, HEAD) as results:
        results.append(sample("p1", 0))
    with open(path, "a") as f:
        f.write('{"model": "m", "problem": "p2", "sam')  # killed mid-write
    with ResultsFile(path, HEAD) as results:
        assert results.done_keys() == {("m", "p1", 0)}
        results.append(sample("p2", 0))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("problem") for r in records] == [None, "p1", "p2"]


def test_other_settings_and_foreign_files_are_refused_untouched(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, HEAD) as results:
        results.append(sample("p1", 0))
    kept = path.read_bytes()
    other = header("quick", "d" * 64, {**HEAD["settings"], "seed": 1})
    with pytest.raises(ResultsFileError, match="holds samples of another run .*seed 0.*seed 1"):
        ResultsFile(path, other)
    other_set = header("gsm8k", "e" * 64, HEAD["settings"])
    with pytest.raises(ResultsFileError, match="another run"):
        ResultsFile(path, other_set)
    assert path.read_bytes() == kept
    foreign = tmp_path / "answers.jsonl"
    foreign.write_text('{"id": 1, "answer": "x"}\n')
    with pytest.raises(ResultsFileError, match="not a localr1 eval results file"):
        ResultsFile(foreign, HEAD)
    assert foreign.read_text() == '{"id": 1, "answer": "x"}\n'


def test_samples_are_chosen_by_model_problem_and_count(tmp_path):
    results = ResultsFile(None, HEAD)  # in memory: no -o
    for index in range(3):
        results.append(sample("p1", index))
    results.append(sample("p2", 0, correct=False))
    results.append({**sample("p1", 0), "model": "other"})
    assert len(results.samples("m", {"p1", "p2"}, 2)) == 3


def test_a_file_that_is_not_ours_is_refused_whole(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\nline two without a newline")
    with pytest.raises(ResultsFileError, match="not a localr1 eval results file"):
        ResultsFile(notes, HEAD)
    assert notes.read_text() == "my precious notes\nline two without a newline"


def test_a_header_alone_does_not_block_a_run_with_other_settings(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsFile(path, HEAD).close()  # a run that stopped before its first sample
    other = header("quick", "d" * 64, {**HEAD["settings"], "max_tokens": 500})
    with ResultsFile(path, other) as results:
        results.append(sample("p1", 0))
    assert [json.loads(line) for line in path.read_text().splitlines()][0] == other


def test_failed_samples_are_tried_again_and_a_cut_character_is_no_obstacle(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path, HEAD) as results:
        results.append(sample("p1", 0, correct=False, error="the server went away"))
        results.append(sample("p2", 0))
    with open(path, "ab") as f:
        f.write('{"model": "m", "problem": "p3", "reasoning": "×'.encode()[:-1])  # cut in "×"
    with ResultsFile(path, HEAD) as results:
        assert results.done_keys() == {("m", "p2", 0)}  # p1 failed: decoded again
