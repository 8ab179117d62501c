"""`localr1 run`, `doctor` and start-up, as a user runs them: real subprocesses, real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import scripted_models as sm
from tests.fixtures.odd_models import write_huge_sparse_model, write_unknown_architecture_model
from tests.pty_terminal import localr1_on_terminal


def localr1(*args, input=None, env=None):
    # stdin is always a pipe here (empty unless given), as in CI where nothing is attached.
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input or "",
                          capture_output=True, text=True, env=env or os.environ.copy(),
                          timeout=120)


@pytest.mark.parametrize("fixture", ["r1_original_model", "r1_prefill_model"])
def test_run_streams_answer_to_stdout_and_reasoning_to_stderr(fixture, request):
    model = request.getfixturevalue(fixture)
    result = localr1("run", "--model", model, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == sm.ANSWER_TEXT + "\n"
    assert sm.REASONING_TEXT in result.stderr
    assert "<think>" not in result.stdout + result.stderr


def test_hide_reasoning(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--hide-reasoning", "hi")
    assert result.returncode == 0
    assert result.stdout == sm.ANSWER_TEXT + "\n"
    assert result.stderr == ""


def test_json_output(r1_original_model):
    result = localr1("run", "-m", r1_original_model, "--json", "--seed", "1", "hi")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["reasoning"] == sm.REASONING_TEXT and data["answer"] == sm.ANSWER_TEXT
    assert data["finish_reason"] == "stop"
    assert set(data["usage"]) >= {"prompt_tokens", "completion_tokens", "reasoning_tokens"}
    assert set(data["timings"]) >= {"ttft_ms", "tokens_per_second", "thinking_seconds"}
    assert data["model"] == r1_original_model.stem  # its name, never its path
    assert result.stderr == ""


def test_prompt_from_stdin_and_arguments(r1_prefill_model):
    piped = localr1("run", "-m", r1_prefill_model, input="some text from a pipe\n")
    assert piped.returncode == 0 and piped.stdout == sm.ANSWER_TEXT + "\n"
    only_args = json.loads(localr1("run", "-m", r1_prefill_model, "--json", "summarise").stdout)
    both = json.loads(localr1("run", "-m", r1_prefill_model, "--json", "summarise",
                              input="a file with several words in it\n").stdout)
    assert both["usage"]["prompt_tokens"] > only_args["usage"]["prompt_tokens"] + 5


def test_bad_usage_exits_2(r1_prefill_model):
    assert localr1("run", "-m", r1_prefill_model, input="").returncode == 2  # no prompt
    assert localr1("run", "--temperature", "hot", "-m", r1_prefill_model, "x").returncode == 2
    assert localr1("run", "--gpu-layers", "many", "x").returncode == 2
    assert localr1("run", "x").returncode == 2  # no model and no default


def assert_one_line_error(result, *words):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_error_cases_print_one_line_and_exit_1(tmp_path, r1_prefill_model):
    assert_one_line_error(localr1("run", "-m", tmp_path / "absent.gguf", "hi"), "no such file")
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model")
    assert_one_line_error(localr1("run", "-m", notes, "hi"), "not a GGUF")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(r1_prefill_model.read_bytes()[:20_000_000])
    assert_one_line_error(localr1("run", "-m", cut, "hi"), "truncated")
    odd = write_unknown_architecture_model(tmp_path / "odd.gguf")
    assert_one_line_error(localr1("run", "-m", odd, "hi"), "frobnicator")
    huge = write_huge_sparse_model(tmp_path / "huge.gguf", tensor_bytes=2**40)
    assert_one_line_error(localr1("run", "-m", huge, "hi"), "is free")
    assert_one_line_error(localr1("run", "-m", "no-such-model", "hi"), "unknown model")
    assert_one_line_error(localr1("run", "-m", r1_prefill_model, "--chat-format", "nope", "x"),
                          "unknown chat format")


def test_empty_answer_is_not_a_silent_success(r1_loop_model):
    result = localr1("run", "-m", r1_loop_model, "--max-tokens", "10", "hi")
    assert result.returncode == 1
    assert "the model gave no answer" in result.stderr.splitlines()[-1]
    assert "cut off" in result.stderr


def test_no_template_model_uses_the_builtin_r1_format(r1_no_template_model):
    result = localr1("run", "-m", r1_no_template_model, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == sm.ANSWER_TEXT + "\n"


def test_model_name_from_models_folder_and_default(tmp_path, r1_prefill_model):
    env = os.environ.copy()
    env["LOCALR1_HOME"] = str(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-r1.gguf").symlink_to(r1_prefill_model)
    assert localr1("run", "-m", "tiny-r1", "hi", env=env).stdout == sm.ANSWER_TEXT + "\n"
    (tmp_path / "config.toml").write_text('default_model = "tiny-r1"\n')
    assert localr1("run", "hi", env=env).stdout == sm.ANSWER_TEXT + "\n"
    near = localr1("run", "-m", "tiny-r2", "hi", env=env)
    assert near.returncode == 1 and "did you mean tiny-r1" in near.stderr


def run_in_terminal(*args):
    """Run localr1 with stdout and stderr on a pseudo-terminal; return what the terminal got."""
    code, screen = localr1_on_terminal(*args)
    return code, screen.decode("utf-8", "replace")


def test_escape_sequences_never_reach_a_terminal_raw(r1_markup_model):
    code, screen = run_in_terminal("run", "-m", r1_markup_model, "hi")
    assert code == 0
    assert "\\x1b[31m" in screen  # shown as text
    model_text = screen.replace("\x1b[2m", "").replace("\x1b[0m", "")  # our own dimming
    assert "\x1b" not in model_text
    assert "[bold]" in screen  # Rich markup is just text on a terminal


def test_escape_sequences_pass_through_a_pipe_unchanged(r1_markup_model):
    result = localr1("run", "-m", r1_markup_model, "--hide-reasoning", "hi")
    assert result.stdout == sm.MARKUP_ANSWER_TEXT + "\n"


def test_smollm2_streams_a_real_answer(smollm2_model):
    result = localr1("run", "-m", smollm2_model, "--seed", "1", "--max-tokens", "60",
                     "What is the capital of France? Answer in one sentence.")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 3


def test_doctor_reports_build_and_paths(tmp_path):
    result = localr1("doctor")
    assert result.returncode == 0, result.stdout
    for word in ("llama-cpp-python", "llama.cpp build", "GPU offload", "memory", "models folder"):
        assert word in result.stdout
    data = json.loads(localr1("doctor", "--json").stdout)
    assert {c["name"] for c in data} >= {"llama-cpp-python", "GPU offload", "config"}


def test_doctor_fails_on_a_broken_config(tmp_path):
    env = os.environ.copy()
    env["LOCALR1_HOME"] = str(tmp_path)
    (tmp_path / "config.toml").write_text("context_size = 'big'\n")
    result = localr1("doctor", env=env)
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "config.toml:1:1" in result.stdout


def test_help_is_lazy():
    # Every module's own check is tests/test_architecture.py; this one is about start-up cost.
    code = ("import sys; from localr1.cli.main import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'llama_cpp' not in sys.modules and 'textual' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_and_version():
    result = localr1("--version")
    assert result.returncode == 0 and "localr1, version" in result.stdout


def test_doctor_model_test_confirms_where_the_model_runs(r1_prefill_model, tmp_path):
    result = localr1("doctor", "--model", r1_prefill_model)
    assert result.returncode == 0, result.stdout
    assert "model test" in result.stdout and "runs on CPU" in result.stdout
    broken = localr1("doctor", "--model", tmp_path / "absent.gguf")
    assert broken.returncode == 1 and "no such file" in broken.stdout
