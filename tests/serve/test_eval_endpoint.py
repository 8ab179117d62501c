"""`localr1 eval --endpoint`: a model behind a real `localr1 serve` scored like a local one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_eval_cli import PROBLEMS, localr1, scores


def test_eval_through_an_endpoint_scores_as_a_local_run(tmp_path, serve, r1_boxed_right_model):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    running = serve(r1_boxed_right_model, name="boxed")
    output = tmp_path / "samples.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "localr1", "eval", str(problems), "--endpoint",
         f"{running.base_url}/v1", "--samples", "2", "--parallel", "2", "--max-tokens", "200",
         "-o", str(output), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (score,) = json.loads(result.stdout)["models"]
    assert score["model"] == "boxed"  # the server's name for its model
    assert score["pass_at_1"] == pytest.approx(2 / 3)
    assert score["format_rate"] == 1.0  # reasoning_content counts as the think block
    samples = [json.loads(line) for line in output.read_text().splitlines()[1:]]
    assert len(samples) == 6 and all(s["reasoning"] for s in samples)


def test_local_only_options_are_refused_with_an_endpoint(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps(PROBLEMS[0]) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "localr1", "eval", str(problems), "--endpoint",
         "http://127.0.0.1:9/v1", "--gpu-layers", "all"], capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert "--gpu-layers cannot be used with --endpoint" in result.stderr


def test_a_failed_sample_is_tried_again_by_the_next_run(tmp_path, serve, r1_boxed_right_model):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    output = tmp_path / "samples.jsonl"
    down = localr1("eval", problems, "--endpoint", "http://127.0.0.1:9/v1", "-m", "boxed",
                   "--samples", "1", "--max-tokens", "200", "-o", output)
    assert down.returncode == 1
    assert "3 samples could not be decoded" in down.stderr
    assert "not kept in the history" in down.stderr
    running = serve(r1_boxed_right_model, name="boxed")
    up = localr1("eval", problems, "--endpoint", f"{running.base_url}/v1", "-m", "boxed",
                 "--samples", "1", "--max-tokens", "200", "-o", output, "--json")
    assert scores(up)["boxed"]["pass_at_1"] == pytest.approx(2 / 3)
    runs = json.loads(localr1("eval", "--history", "--json").stdout)
    assert [run["pass_at_1"] for run in runs] == [pytest.approx(2 / 3)]
