"""`localr1 eval` end to end: scripted R1 models with known answers give exactly the expected
scores, results resume after kill -9, SmolLM2 runs the built-in set, runs land in the history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.fixtures.scripted_models import build_scripted_model

# Three problems whose answers the scripted models (which say the same whatever they are asked)
# get right twice ("boxed_right" answers \boxed{42}) or never.
PROBLEMS = [
    {"id": "p1", "problem": "What is 6 times 7?", "answer": "42"},
    {"id": "p2", "problem": "What is 84 divided by 2?", "answer": "42.0"},
    {"id": "p3", "problem": "What is 3 plus 4?", "answer": "7"},
]


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=600)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def scores(result) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {model["model"]: model for model in json.loads(result.stdout)["models"]}


@pytest.mark.parametrize(("fixture", "expected"), [
    # pass@1, cons@K, format rate, samples with a box
    ("r1_boxed_right_model", (2 / 3, 2 / 3, 1.0, 6)),
    ("r1_boxed_wrong_model", (0.0, 0.0, 1.0, 6)),
    ("r1_no_box_model", (0.0, 0.0, 1.0, 0)),
    ("r1_loop_model", (0.0, 0.0, 0.0, 0)),  # the think block never closes
])
def test_scripted_models_score_exactly(tmp_path, problems, fixture, expected, request):
    model = request.getfixturevalue(fixture)
    output = tmp_path / "samples.jsonl"
    result = localr1("eval", problems, "-m", model, "--samples", "2", "--max-tokens", "400",
                     "-o", output, "--json", "--parallel", "2")
    score = scores(result)[model.stem]
    pass_at_1, cons, format_rate, boxed = expected
    assert score["pass_at_1"] == pytest.approx(pass_at_1)
    assert score["cons_at_k"] == pytest.approx(cons)
    assert score["format_rate"] == pytest.approx(format_rate)
    assert score["problems"] == 3 and score["samples_per_problem"] == 2
    samples = lines(output)[1:]
    assert len(samples) == 6
    assert sum(s["extracted"] is not None for s in samples) == boxed
    assert all(s["error"] is None for s in samples)
    if fixture == "r1_boxed_right_model":
        # "42.0" is the same answer as the boxed 42 (math-verify), 7 is not
        assert {s["problem"]: s["correct"] for s in samples} == \
            {"p1": True, "p2": True, "p3": False}
        low, high = score["pass_at_1_interval"]
        assert low < score["pass_at_1"] < high
        assert sorted(score["solved"]) == ["p1", "p2"]


def test_two_models_side_by_side(problems, r1_boxed_right_model, r1_boxed_wrong_model):
    result = localr1("eval", problems, "-m", r1_boxed_right_model, "-m", r1_boxed_wrong_model,
                     "--samples", "1", "--max-tokens", "200")
    assert result.returncode == 0, result.stderr
    table = result.stdout
    right, wrong = r1_boxed_right_model.stem, r1_boxed_wrong_model.stem
    header = next(line for line in table.splitlines() if right in line)
    assert wrong in header  # one column per model
    pass_line = next(line for line in table.splitlines() if line.startswith("pass@1"))
    assert "66.7%" in pass_line and "0.0%" in pass_line
    assert f"solved by {right}, not {wrong} (2): p1, p2" in table
    assert f"solved by {wrong}, not {right} (0)" in table
    assert "3 problems" in result.stderr and "license" not in result.stderr.split("\n")[0]


def test_history_lists_runs_and_json(problems, r1_boxed_right_model):
    assert localr1("eval", problems, "-m", r1_boxed_right_model, "--samples", "1",
                   "--max-tokens", "200").returncode == 0
    listed = localr1("eval", "--history")
    assert listed.returncode == 0, listed.stderr
    assert r1_boxed_right_model.stem in listed.stdout and "66.7%" in listed.stdout
    runs = json.loads(localr1("eval", "--history", "--json").stdout)
    assert runs[0]["model"] == r1_boxed_right_model.stem
    assert runs[0]["pass_at_1"] == pytest.approx(2 / 3)
    assert runs[0]["set_name"] == "problems.jsonl"


def test_resume_after_kill_9_gives_each_sample_once(tmp_path, problems):
    # A model that thinks for a while per sample, so the kill lands mid-run.
    model = build_scripted_model(tmp_path / "slow-loop.gguf", "loop", context_length=2048)
    output = tmp_path / "samples.jsonl"
    args = ["eval", problems, "-m", model, "--samples", "4", "--max-tokens", "1500",
            "--threads", "1", "-o", output]
    process = subprocess.Popen([sys.executable, "-m", "localr1", *map(str, args)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and len(output.read_text().splitlines()) >= 3:  # header + 2
            break
        time.sleep(0.05)
    assert process.poll() is None, "the eval finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = len(lines(output)) - 1
    assert 2 <= before < 12
    result = localr1(*args, "--json")
    assert result.returncode == 0, result.stderr
    samples = lines(output)[1:]
    keys = Counter((s["problem"], s["sample"]) for s in samples)
    assert sorted(keys) == [(p["id"], k) for p in PROBLEMS for k in range(4)]
    assert set(keys.values()) == {1}  # each (problem, sample) exactly once
    assert scores(result)[model.stem]["samples_per_problem"] == 4


def test_a_rerun_decodes_nothing_and_more_samples_extend(tmp_path, problems,
                                                          r1_boxed_right_model):
    output = tmp_path / "samples.jsonl"
    common = [problems, "-m", r1_boxed_right_model, "--max-tokens", "200", "-o", output]
    assert localr1("eval", *common, "--samples", "2").returncode == 0
    first = output.read_text()
    again = localr1("eval", *common, "--samples", "2", "--json")
    assert output.read_text() == first  # nothing decoded again
    assert scores(again)[r1_boxed_right_model.stem]["pass_at_1"] == pytest.approx(2 / 3)
    more = localr1("eval", *common, "--samples", "3", "--json")
    assert scores(more)[r1_boxed_right_model.stem]["samples_per_problem"] == 3
    assert len(lines(output)) == 1 + 9
    runs = json.loads(localr1("eval", "--history", "--json").stdout)
    assert [run["samples"] for run in runs] == [3, 2]  # the rerun that decoded nothing: no row


def test_other_settings_in_the_results_file_are_refused(tmp_path, problems,
                                                        r1_boxed_right_model):
    output = tmp_path / "samples.jsonl"
    common = [problems, "-m", r1_boxed_right_model, "--max-tokens", "200", "-o", output]
    assert localr1("eval", *common, "--samples", "1").returncode == 0
    kept = output.read_text()
    result = localr1("eval", *common, "--samples", "1", "--temperature", "0.2")
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "holds samples of another run" in message and "temperature 0.6" in message
    assert output.read_text() == kept


def test_export_sft_writes_only_samples_passing_both_rules(tmp_path, problems,
                                                           r1_boxed_right_model):
    from tests.fixtures import scripted_models as sm

    sft = tmp_path / "sft.jsonl"
    result = localr1("eval", problems, "-m", r1_boxed_right_model, "--samples", "2",
                     "--max-tokens", "200", "--export-sft", sft)
    assert result.returncode == 0, result.stderr
    rows = lines(sft)
    assert sorted(r["problem_id"] for r in rows) == ["p1", "p1", "p2", "p2"]
    assistant = rows[0]["messages"][1]["content"]
    assert assistant.startswith("<think>\n") and "</think>" in assistant
    assert rows[0]["answer"] == sm.BOXED_RIGHT_ANSWER_TEXT
    assert rows[0]["messages"][0]["content"].endswith(
        "Please reason step by step, and put your final answer within \\boxed{}.")
    shortest = tmp_path / "shortest.jsonl"
    assert localr1("eval", problems, "-m", r1_boxed_right_model, "--samples", "2",
                   "--max-tokens", "200", "--export-sft", shortest,
                   "--sft-shortest").returncode == 0
    assert sorted(r["problem_id"] for r in lines(shortest)) == ["p1", "p2"]


def test_smollm2_runs_the_built_in_set_end_to_end(tmp_path, smollm2_model):
    output = tmp_path / "quick.jsonl"
    result = localr1("eval", "quick", "-m", smollm2_model, "--samples", "1", "--max-tokens",
                     "24", "--parallel", "4", "-o", output, "--json")
    report = json.loads(result.stdout)
    score = scores(result)[smollm2_model.stem]
    n = report["set"]["problems"]
    assert n >= 30 and score["problems"] == n
    assert len(lines(output)) == 1 + n
    assert score["format_rate"] == 0.0  # SmolLM2 does not think in a <think> block
    assert 0.0 <= score["pass_at_1"] <= 1.0
    assert "license MIT" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": 1, "problem": "2+2?"}\n', 'problems.jsonl:1: "answer" must be a non-empty string'),
    ('{"id": 1, "problem": "a", "answer": "1"}\n{"id": 1, "problem": "b", "answer": "2"}\n',
     "problems.jsonl:2: duplicate problem id '1' (also on line 1"),
    ('{"id": " ", "problem": "a", "answer": "1"}\n', "problems.jsonl:1: id is blank"),
    ("not json\n", "problems.jsonl:1: not valid JSON"),
])
def test_bad_sets_are_one_line(tmp_path, r1_boxed_right_model, content, message):
    path = tmp_path / "problems.jsonl"
    path.write_text(content)
    result = localr1("eval", path, "-m", r1_boxed_right_model)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_unknown_set_name_lists_the_known_ones(r1_boxed_right_model):
    result = localr1("eval", "aime", "-m", r1_boxed_right_model)
    assert result.returncode == 1
    assert "no problem set named 'aime': use one of quick, gsm8k, math-500" in result.stderr


def test_a_terminal_gets_a_progress_bar_with_eta(tmp_path, problems, r1_loop_model):
    from tests.pty_terminal import localr1_on_terminal

    status, output = localr1_on_terminal(
        "eval", problems, "-m", r1_loop_model, "--samples", "2", "--max-tokens", "300",
        "--threads", "1")
    text = output.decode("utf-8", "replace")
    assert status == 0, text
    assert "[##########..........] 3/6 samples" in text
    assert "ETA " in text and "tok/s" in text
    assert "[####################] 6/6 samples" in text
    assert "pass@1" in text  # then the table


def test_max_tokens_beyond_the_models_context_gets_what_fits(problems, r1_boxed_right_model):
    # The default 8192 tokens per sample on a model trained for 4096.
    result = localr1("eval", problems, "-m", r1_boxed_right_model, "--samples", "1", "--json")
    assert scores(result)[r1_boxed_right_model.stem]["pass_at_1"] == pytest.approx(2 / 3)
    assert "context of 4096 tokens leaves fewer than 8192 tokens per sample for 3 of 3 " \
        "problems" in result.stderr


def test_every_model_is_found_before_anything_is_decoded(tmp_path, problems,
                                                         r1_boxed_right_model):
    output = tmp_path / "samples.jsonl"
    result = localr1("eval", problems, "-m", r1_boxed_right_model, "-m",
                     tmp_path / "typo.gguf", "-o", output)
    assert result.returncode != 0 and "typo.gguf" in result.stderr
    assert not output.exists()
    twin = tmp_path / "other" / r1_boxed_right_model.name
    twin.parent.mkdir()
    twin.write_bytes(r1_boxed_right_model.read_bytes())
    clash = localr1("eval", problems, "-m", r1_boxed_right_model, "-m", twin)
    assert clash.returncode == 2
    assert f"two models go by the name {r1_boxed_right_model.stem!r}" in clash.stderr


def test_output_must_be_its_own_file(tmp_path, problems, r1_boxed_right_model):
    same = localr1("eval", problems, "-m", r1_boxed_right_model, "-o", tmp_path / "x.jsonl",
                   "--export-sft", tmp_path / "x.jsonl")
    assert same.returncode == 2 and "must be different files" in same.stderr
    table = tmp_path / "all.txt"
    with open(table, "w") as stdout:
        to_stdout = subprocess.run(
            [sys.executable, "-m", "localr1", "eval", str(problems), "-m",
             str(r1_boxed_right_model), "-o", "/dev/stdout"], stdout=stdout,
            stderr=subprocess.PIPE, text=True, timeout=120)
    assert to_stdout.returncode == 2 and "-o cannot be stdout" in to_stdout.stderr


def test_digit_heavy_prompts_get_the_context_they_need(tmp_path, r1_boxed_right_model):
    # Fewer characters but more tokens than the other problem (digits are one token each).
    path = tmp_path / "long.jsonl"
    rows = [{"id": "words", "problem": "a" * 600, "answer": "42"},
            {"id": "digits", "problem": "7" * 400, "answer": "42"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = localr1("eval", path, "-m", r1_boxed_right_model, "--samples", "1",
                     "--max-tokens", "200", "--json")
    assert scores(result)[r1_boxed_right_model.stem]["pass_at_1"] == 1.0


def test_a_result_missing_from_the_history_is_added_by_a_rerun(tmp_path, problems,
                                                               r1_boxed_right_model):
    from localr1.paths import app_paths

    output = tmp_path / "samples.jsonl"
    common = [problems, "-m", r1_boxed_right_model, "--samples", "1", "--max-tokens", "200",
              "-o", output]
    assert localr1("eval", *common).returncode == 0
    app_paths().db_path.unlink()  # as if the first run had stopped before saving it
    assert localr1("eval", *common).returncode == 0  # decodes nothing
    assert localr1("eval", *common).returncode == 0  # and adds no second row
    runs = json.loads(localr1("eval", "--history", "--json").stdout)
    assert [run["pass_at_1"] for run in runs] == [pytest.approx(2 / 3)]


def test_the_export_may_not_overwrite_the_problem_set(tmp_path, problems,
                                                      r1_boxed_right_model):
    kept = problems.read_text()
    result = localr1("eval", problems, "-m", r1_boxed_right_model, "--export-sft",
                     tmp_path / "x" / ".." / problems.name)
    assert result.returncode == 2 and "would overwrite the problem set" in result.stderr
    assert problems.read_text() == kept


def test_a_prompt_too_long_for_the_context_fails_alone(tmp_path, r1_boxed_right_model):
    path = tmp_path / "mixed.jsonl"
    rows = [{"id": "short", "problem": "6 times 7?", "answer": "42"},
            {"id": "huge", "problem": "word " * 5000, "answer": "42"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "samples.jsonl"
    result = localr1("eval", path, "-m", r1_boxed_right_model, "--samples", "1", "-o", output)
    assert result.returncode == 1
    samples = {s["problem"]: s for s in lines(output)[1:]}
    assert samples["short"]["correct"] and samples["short"]["error"] is None
    assert "problem huge: its prompt needs" in samples["huge"]["error"]
    assert "fewer than 8192 tokens per sample for 2 of 2 problems" in result.stderr
