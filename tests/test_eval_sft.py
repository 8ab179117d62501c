"""`--export-sft`: R1's rejection sampling on crafted sample records (the shape `localr1 eval -o`
writes), through a real file: both rules, the hard-problem and shortest-trace filters with their
ties, the exact JSON of a training record, and a file that is whole or absent."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.errors import LocalR1Error
from localr1.evaluation.problems import R1_INSTRUCTION, Problem, user_prompt
from localr1.evaluation.sft_export import (
    BAD_FORMAT,
    DUPLICATE,
    FAILED,
    NOT_SHORTEST,
    SOLVED_TOO_OFTEN,
    UNKNOWN_PROBLEM,
    WRONG,
    ExportSummary,
    export_sft,
    training_record,
)

PROBLEMS = {
    "p1": Problem("p1", "What is 6 times 7?", "42"),
    "p2": Problem("p2", "Half of one?", "\\frac{1}{2}"),
    "p3": Problem("p3", "unused", "3", prompt="Own prompt: what is 1 + 2?"),
}


def sample(problem="p1", number=0, *, model="tiny-r1", correct=True, format_ok=True,
           error=None, reasoning="Six times seven makes forty-two!", tokens=7,
           answer="The answer is $\\boxed{42}$.", **fields) -> dict:
    """A sample record as the eval runner writes it."""
    record = {
        "model": model, "problem": problem, "sample": number, "seed": 1000 + number,
        "prompt": None, "reasoning": reasoning, "answer": answer,
        "extracted": "42" if correct else None, "correct": correct, "format_ok": format_ok,
        "finish_reason": "stop", "reasoning_tokens": tokens,
        "completion_tokens": None if tokens is None else tokens + 10,
        "answer_key": "42" if correct else None, "seconds": 0.5, "error": error,
    }
    record.update(fields)
    if record["prompt"] is None:
        del record["prompt"]
    return record


def export(tmp_path: Path, samples, **options) -> tuple[ExportSummary, list[dict], str]:
    out = tmp_path / "sft.jsonl"
    summary = export_sft(samples, PROBLEMS, out, **options)
    text = out.read_text(encoding="utf-8")
    return summary, [json.loads(line) for line in text.splitlines()], text


def kept(records: list[dict]) -> list[tuple[str, str, int]]:
    return [(r["model"], r["problem_id"], r["sample"]) for r in records]


def test_a_passing_sample_becomes_exactly_this_line(tmp_path):
    summary, records, text = export(tmp_path, [sample()])
    expected = {
        "messages": [
            {"role": "user",
             "content": "What is 6 times 7?\nPlease reason step by step, and put your final "
                        "answer within \\boxed{}."},
            {"role": "assistant",
             "content": "<think>\nSix times seven makes forty-two!\n</think>\n\n"
                        "The answer is $\\boxed{42}$."},
        ],
        "reasoning": "Six times seven makes forty-two!",
        "answer": "The answer is $\\boxed{42}$.",
        "problem_id": "p1",
        "reference": "42",
        "model": "tiny-r1",
        "sample": 0,
    }
    assert text == json.dumps(expected, ensure_ascii=False) + "\n"
    assert records == [expected]
    assert list(records[0]) == list(expected)  # the field order too
    assert summary == ExportSummary(written=1, problems=1, skipped={})


def test_the_user_turn_is_the_prompt_the_model_saw(tmp_path):
    samples = [sample("p1", 0, prompt="Exactly what the runner sent"), sample("p1", 1),
               sample("p3", 0)]
    _, records, _ = export(tmp_path, samples)
    users = [r["messages"][0]["content"] for r in records]
    assert users == ["Exactly what the runner sent",
                     f"What is 6 times 7?\n{R1_INSTRUCTION}",
                     "Own prompt: what is 1 + 2?"]
    assert users[1:] == [user_prompt(PROBLEMS["p1"]), user_prompt(PROBLEMS["p3"])]
    assert records[2]["reference"] == "3"


def test_only_samples_passing_both_rules_are_kept(tmp_path):
    samples = [
        sample("p1", 0),
        sample("p1", 1, correct=False, answer="The answer is $\\boxed{41}$."),
        sample("p1", 2, correct=False, answer="The answer is 42."),  # no box
        sample("p1", 3, format_ok=False),  # right answer, think block never closed
        sample("p2", 0, correct=False, format_ok=False, error="context overflow",
               reasoning=None, answer=None, tokens=None),
        sample("p2", 1, correct=True, error="decoder failed"),  # an error is never a pass
        sample("p2", 2, correct=False, format_ok=False),  # counted once, as the first reason
        sample("p9", 0),
        sample("p1", 0),  # a second copy of a sample already seen
    ]
    summary, records, _ = export(tmp_path, samples)
    assert kept(records) == [("tiny-r1", "p1", 0)]
    assert summary == ExportSummary(written=1, problems=1, skipped={
        WRONG: 3, BAD_FORMAT: 1, FAILED: 2, UNKNOWN_PROBLEM: 1, DUPLICATE: 1})


def test_integer_problem_ids_match_their_string_ids(tmp_path):
    problems = {"7": Problem("7", "What is 6 times 7?", "42")}
    out = tmp_path / "sft.jsonl"
    summary = export_sft([sample(7)], problems, out)
    assert summary.written == 1
    assert json.loads(out.read_text())["problem_id"] == "7"


def hard_and_easy() -> list[dict]:
    """Model a solves p1 in 1 of 4 samples and p2 in 3 of 4; model b solves p2 in 2 of 4 (one of
    them badly formatted: still a solve, so p2 counts 2 for b)."""
    samples = []
    for number in range(4):
        samples.append(sample("p1", number, model="a", correct=number == 0))
        samples.append(sample("p2", number, model="a", correct=number < 3))
        samples.append(sample("p2", number, model="b", correct=number < 2,
                              format_ok=number != 1))
    return samples


def test_max_solved_keeps_the_hard_problems_per_model(tmp_path):
    summary, records, _ = export(tmp_path, hard_and_easy(), max_solved=1)
    assert kept(records) == [("a", "p1", 0)]
    assert summary.skipped == {WRONG: 6, BAD_FORMAT: 1, SOLVED_TOO_OFTEN: 4}

    summary, records, _ = export(tmp_path, hard_and_easy(), max_solved=2)  # at most M: 2 is in
    assert kept(records) == [("a", "p1", 0), ("b", "p2", 0)]
    assert summary == ExportSummary(written=2, problems=2, skipped={
        WRONG: 6, BAD_FORMAT: 1, SOLVED_TOO_OFTEN: 3})

    summary, records, _ = export(tmp_path, hard_and_easy())
    assert kept(records) == [("a", "p1", 0), ("a", "p2", 0), ("a", "p2", 1), ("a", "p2", 2),
                             ("b", "p2", 0)]


def test_duplicates_do_not_count_as_extra_solves(tmp_path):
    samples = [sample("p1", 0), sample("p1", 1, correct=False), sample("p1", 0)]
    summary, records, _ = export(tmp_path, samples, max_solved=1)
    assert kept(records) == [("tiny-r1", "p1", 0)]
    assert summary.skipped == {WRONG: 1, DUPLICATE: 1}


def test_shortest_keeps_one_trace_per_problem_with_every_tie_broken(tmp_path):
    samples = [
        # p1: fewest reasoning tokens wins, whatever the text length or sample number
        sample("p1", 0, tokens=9, reasoning="short"),
        sample("p1", 1, tokens=5, reasoning="a much longer reasoning text"),
        sample("p1", 2, tokens=5, reasoning="a much longer reasoning text, longer still"),
        # p2: equal tokens, then the shortest reasoning + answer text
        sample("p2", 0, model="a", tokens=4, reasoning="four four"),
        sample("p2", 1, model="a", tokens=4, reasoning="four"),
        sample("p2", 2, model="b", tokens=4, reasoning="four", answer="\\boxed{0.5}"),
        # p3: equal tokens and text: the lowest sample number, across models too
        sample("p3", 3, model="a", tokens=2),
        sample("p3", 1, model="b", tokens=2),
        sample("p3", 1, model="c", tokens=2),  # a full tie: the one seen first stays
        sample("p3", 0, model="c", correct=False, tokens=1),  # shorter, but wrong
    ]
    summary, records, _ = export(tmp_path, samples, shortest=True)
    assert kept(records) == [("tiny-r1", "p1", 1), ("b", "p2", 2), ("b", "p3", 1)]
    assert summary == ExportSummary(written=3, problems=3,
                                    skipped={NOT_SHORTEST: 6, WRONG: 1})


def test_shortest_puts_unknown_token_counts_last(tmp_path):
    samples = [sample("p1", 0, tokens=None, reasoning="x"), sample("p1", 1, tokens=50)]
    _, records, _ = export(tmp_path, samples, shortest=True)
    assert kept(records) == [("tiny-r1", "p1", 1)]


def test_max_solved_and_shortest_together(tmp_path):
    samples = hard_and_easy() + [sample("p1", 4, model="a", tokens=1)]  # a now solves p1 twice
    summary, records, _ = export(tmp_path, samples, max_solved=2, shortest=True)
    assert kept(records) == [("a", "p1", 4), ("b", "p2", 0)]
    assert summary.skipped == {WRONG: 6, BAD_FORMAT: 1, SOLVED_TOO_OFTEN: 3, NOT_SHORTEST: 1}


def test_the_file_does_not_depend_on_the_order_samples_finished(tmp_path):
    samples = hard_and_easy()
    export(tmp_path, samples)
    first = (tmp_path / "sft.jsonl").read_bytes()
    export(tmp_path, list(reversed(samples[:6])) + samples[6:])
    assert (tmp_path / "sft.jsonl").read_bytes() == first
    records = [json.loads(line) for line in first.splitlines()]
    # the set's problem order, then models in the order first seen, then sample numbers
    assert [(r["problem_id"], r["model"]) for r in records] == [
        ("p1", "a"), ("p2", "a"), ("p2", "a"), ("p2", "a"), ("p2", "b")]


def test_text_stays_readable_and_every_record_one_line(tmp_path):
    reasoning = "π ≈ 3.14; half is ½\u2028a line separator\nand a newline \"quoted\" \\ tab\t"
    answer = "答案是 $\\boxed{\\frac{1}{2}}$ \u2029 ✓"
    samples = [sample("p2", 0, reasoning=reasoning, answer=answer), sample("p1", 0)]
    _, records, text = export(tmp_path, samples)
    assert "π ≈ 3.14; half is ½" in text and "答案是" in text and "✓" in text  # not \\u escapes
    assert "\u2028" not in text and "\u2029" not in text and "\\u2028" in text
    assert text.count("\n") == 2 and len(text.splitlines()) == 2
    half = records[1]  # p2 comes after p1 in the set
    assert half["reasoning"] == reasoning and half["answer"] == answer
    assert half["messages"][1]["content"] == f"<think>\n{reasoning}\n</think>\n\n{answer}"
    assert half == training_record(samples[0], PROBLEMS["p2"])


def test_nothing_passing_writes_an_empty_file(tmp_path):
    summary, records, text = export(tmp_path, [sample(correct=False)])
    assert (summary.written, summary.problems, records, text) == (0, 0, [], "")


def test_a_record_without_its_ids_is_a_one_line_error(tmp_path):
    record = sample()
    del record["sample"]
    with pytest.raises(LocalR1Error, match=r"^sample record 2 has no sample$"):
        export_sft([sample(), record], PROBLEMS, tmp_path / "sft.jsonl")
    assert not (tmp_path / "sft.jsonl").exists()


def test_a_negative_max_solved_is_a_one_line_error(tmp_path):
    with pytest.raises(LocalR1Error, match="max_solved must be 0 or more"):
        export_sft([sample()], PROBLEMS, tmp_path / "sft.jsonl", max_solved=-1)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unwritable_destinations_are_one_line_errors_and_leave_nothing(tmp_path):
    missing = tmp_path / "no such folder" / "sft.jsonl"
    with pytest.raises(LocalR1Error) as excinfo:
        export_sft([sample()], PROBLEMS, missing)
    assert one_line_error(excinfo) == \
        f"{missing}: cannot write the SFT export: No such file or directory"

    folder = tmp_path / "a folder"
    folder.mkdir()
    with pytest.raises(LocalR1Error) as excinfo:
        export_sft([sample()], PROBLEMS, folder)
    assert one_line_error(excinfo) == f"{folder}: cannot write the SFT export: Is a directory"
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []


def test_a_full_device_is_a_one_line_error_and_stays_a_device():
    full = Path("/dev/full")
    with pytest.raises(LocalR1Error) as excinfo:
        export_sft([sample()], PROBLEMS, full)
    assert one_line_error(excinfo) == \
        "/dev/full: cannot write the SFT export: No space left on device"
    assert stat.S_ISCHR(full.stat().st_mode)  # written through, never renamed over
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".full.")]


# `localr1 eval ... --export-sft /dev/stdout >> all.jsonl`: the score table, then the export,
# both through the shell's file.
STDOUT_SCRIPT = """
import json, sys
from localr1.evaluation.problems import Problem
from localr1.evaluation.sft_export import export_sft

print("the score table", flush=True)
export_sft([json.loads(sys.argv[1])], {"p1": Problem("p1", "What is 6 times 7?", "42")},
           "/dev/stdout")
"""


def test_dev_stdout_sent_to_a_file_is_appended_to_not_replaced(tmp_path):
    out = tmp_path / "all.jsonl"
    out.write_text("an earlier export\n")
    inode = out.stat().st_ino
    with open(out, "a") as stdout:
        result = subprocess.run([sys.executable, "-c", STDOUT_SCRIPT, json.dumps(sample())],
                                stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[:2] == ["an earlier export", "the score table"]
    assert [json.loads(line)["problem_id"] for line in lines[2:]] == ["p1"]
    assert out.stat().st_ino == inode  # the same file, not one renamed over it
    assert os.listdir(tmp_path) == ["all.jsonl"]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm here")
def test_a_plain_file_under_dev_is_written_through_and_replaced():
    out = Path("/dev/shm") / f"localr1-sft-{os.getpid()}.jsonl"
    try:
        for _ in range(2):
            export_sft([sample()], PROBLEMS, out)
        assert [json.loads(line)["problem_id"] for line in out.read_text().splitlines()] == \
            ["p1"]
    finally:
        out.unlink(missing_ok=True)
    assert not [p for p in Path("/dev/shm").iterdir() if p.name.startswith(f".{out.name}")]


def test_text_that_is_no_unicode_is_kept_escaped(tmp_path):
    # A lone surrogate (from a model's broken UTF-8, read back by json.loads) cannot be UTF-8.
    summary, records, text = export(tmp_path, [sample(reasoning="half a pair: \udc80")])
    assert summary.written == 1
    assert records[0]["reasoning"] == "half a pair: \udc80"
    assert "\\udc80" in text


def test_a_symlink_keeps_pointing_at_the_replaced_file(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    export_sft([sample()], PROBLEMS, link)
    assert link.is_symlink()
    assert json.loads(target.read_text())["problem_id"] == "p1"


# A child process whose files may not grow past a limit (RLIMIT_FSIZE): the write fails half
# way through like on a full disk, after part of the export has reached the temporary file.
FILE_SIZE_LIMIT_SCRIPT = """
import json, resource, signal, sys
from localr1.errors import LocalR1Error
from localr1.evaluation.problems import Problem
from localr1.evaluation.sft_export import export_sft

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
problems = {str(i): Problem(str(i), f"problem {i}", "42") for i in range(50)}
samples = [dict(json.loads(sys.argv[2]), problem=str(i)) for i in range(50)]
try:
    export_sft(samples, problems, sys.argv[1])
except LocalR1Error as exc:
    print(exc)
"""


def test_a_write_failing_half_way_keeps_the_old_file_whole(tmp_path):
    out = tmp_path / "sft.jsonl"
    out.write_text("the previous export\n")
    record = sample(reasoning="r" * 1000)
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT_SCRIPT, str(out),
                             json.dumps(record)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}: cannot write the SFT export: File too large\n"
    assert out.read_text() == "the previous export\n"
    assert os.listdir(tmp_path) == ["sft.jsonl"]  # no temporary file left beside it
