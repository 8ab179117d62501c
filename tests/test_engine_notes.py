"""The note for a guessed prompt format (ModelInfo.format_note) and where users see it: `run`
stderr, `run --json` notes, batch records and `show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from localr1.engine.events import TurnStats
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.turn_notes import turn_notes
from tests.fixtures import scripted_models as sm

GUESSED = ("no chat template in the GGUF; the prompt format 'deepseek-r1' was guessed from its "
           "vocabulary: pick one with --chat-format")


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def test_the_engine_notes_a_guessed_format_only(r1_no_template_model, r1_original_model):
    with Engine.load(EngineConfig(r1_no_template_model, context_size=512)) as engine:
        assert engine.info.format_note == GUESSED
    with Engine.load(EngineConfig(r1_no_template_model, context_size=512,
                                  chat_format="deepseek-r1")) as engine:
        assert engine.info.format_note is None  # the user chose it
    with Engine.load(EngineConfig(r1_original_model, context_size=512)) as engine:
        assert engine.info.format_note is None  # the GGUF's own template


def test_run_prints_the_note_on_stderr(r1_no_template_model):
    result = localr1("run", "-m", r1_no_template_model, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == sm.ANSWER_TEXT + "\n"
    assert f"localr1: {GUESSED}\n" in result.stderr


def test_run_json_lists_the_note(r1_no_template_model, r1_prefill_model):
    data = json.loads(localr1("run", "-m", r1_no_template_model, "--json", "hi").stdout)
    assert data["notes"] == [GUESSED]
    named = localr1("run", "-m", r1_no_template_model, "--chat-format", "deepseek-r1", "--json",
                    "hi")
    assert json.loads(named.stdout)["notes"] == []
    assert json.loads(localr1("run", "-m", r1_prefill_model, "--json", "hi").stdout)["notes"] \
        == []


def test_batch_records_carry_the_note(tmp_path, r1_no_template_model, r1_prefill_model):
    source = tmp_path / "in.txt"
    source.write_text("hi\nhello\n")
    guessed = localr1("batch", source, "-m", r1_no_template_model)
    assert guessed.returncode == 0, guessed.stderr
    records = [json.loads(line) for line in guessed.stdout.splitlines()]
    assert [r["notes"] for r in records] == [[GUESSED], [GUESSED]]
    own = localr1("batch", source, "-m", r1_prefill_model)
    assert [json.loads(line)["notes"] for line in own.stdout.splitlines()] == [[], []]


def test_show_names_the_guessed_format(r1_no_template_model, r1_prefill_model):
    assert localr1("import", r1_no_template_model, "--name", "no-template").returncode == 0
    assert localr1("import", r1_prefill_model, "--name", "prefill").returncode == 0
    shown = localr1("show", "no-template")
    assert shown.returncode == 0, shown.stderr
    assert [line for line in shown.stdout.splitlines()
            if line.startswith("prompt format") and line.endswith(GUESSED)]
    assert shown.stderr == ""  # llama.cpp's log stays off the terminal
    assert json.loads(localr1("show", "no-template", "--json").stdout)["prompt_format"] \
        == GUESSED
    assert "prompt format" not in localr1("show", "prefill").stdout


@pytest.mark.parametrize("reason, truncated, expected", [
    ("stop", False, []),
    ("repetition", False, ["stopped after 300 tokens: the model kept repeating itself (what "
                           "it wrote is kept)"]),
    ("length", True, ["the reasoning was cut off before the model finished thinking",
                      "stopped after 300 tokens (max tokens or context window reached); raise "
                      "--max-tokens or --ctx for a longer reply"]),
])
def test_turn_notes(reason, truncated, expected):
    stats = TurnStats(finish_reason=reason, prompt_tokens=5, cached_prompt_tokens=0,
                      completion_tokens=300, reasoning_tokens=10, reasoning_truncated=truncated,
                      reasoning_budget_hit=False, dropped_messages=0, ttft_seconds=0.1,
                      tokens_per_second=10.0, thinking_seconds=None, total_seconds=1.0)
    assert turn_notes(stats) == expected


def test_a_remote_turn_out_of_tokens_does_not_suggest_ctx():
    stats = TurnStats(finish_reason="length", prompt_tokens=5, cached_prompt_tokens=0,
                      completion_tokens=300, reasoning_tokens=10, reasoning_truncated=False,
                      reasoning_budget_hit=False, dropped_messages=0, ttft_seconds=0.1,
                      tokens_per_second=10.0, thinking_seconds=None, total_seconds=1.0)
    assert turn_notes(stats, remote=True) == [
        "stopped after 300 tokens (max tokens or context window reached); raise --max-tokens "
        "for a longer reply"]


def test_show_follows_the_configured_chat_format(r1_no_template_model):
    from localr1.paths import app_paths

    assert localr1("import", r1_no_template_model, "--name", "no-template").returncode == 0
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('chat_format = "deepseek-r1"\n')
    shown = localr1("show", "no-template", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "prompt_format" not in json.loads(shown.stdout)  # as `run` resolves it: no note
    run = localr1("run", "-m", "no-template", "hi")
    assert run.returncode == 0 and "guessed" not in run.stderr
