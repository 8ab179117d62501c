"""The engine options of `run`, `chat`, `batch`, `serve` and `doctor --model`: --draft,
--draft-max, --draft-min, --flash-attn, --kv-type. Values are checked as config.toml's, the
draft resolves like --model, and what the user chose reaches EngineConfig (the real engine
loads with it; a spy on Engine.load only records the config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.chat_session import acceptance_line, speculative_summary
from localr1.cli.main import cli
from localr1.errors import ModelFileError
from localr1.models.decode_options import kv_cache_facts, resolve_draft
from localr1.paths import app_paths
from tests.draft_stats import draft_turn_stats
from tests.fixtures import scripted_models as sm
from tests.test_run_cli import assert_one_line_error, localr1, run_in_terminal


def invoke(*args: object, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture()
def models_dir() -> Path:
    path = app_paths().models_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(text: str) -> None:
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")


# ---- resolving the draft ---------------------------------------------------------------------


def test_draft_words_and_names_resolve_like_model(models_dir, r1_prefill_model):
    assert resolve_draft(None, models_dir) is None
    assert resolve_draft("none", models_dir) is None
    assert resolve_draft(" NONE ", models_dir) is None
    assert resolve_draft("lookup", models_dir) == "lookup"
    assert resolve_draft(str(r1_prefill_model), models_dir) == r1_prefill_model
    (models_dir / "tiny-draft.gguf").symlink_to(r1_prefill_model)
    assert resolve_draft("tiny-draft", models_dir) == models_dir / "tiny-draft.gguf"


def test_a_missing_draft_names_itself_and_pull(models_dir, tmp_path):
    with pytest.raises(ModelFileError) as caught:
        resolve_draft("r1:1.5b", models_dir)
    assert str(caught.value) == \
        "draft model 'r1:1.5b-q4_k_m' is not installed; run: localr1 pull r1:1.5b"
    with pytest.raises(ModelFileError, match=r"^draft model: .*absent.gguf: no such file"):
        resolve_draft(str(tmp_path / "absent.gguf"), models_dir)


def test_kv_facts_only_when_not_the_defaults():
    assert kv_cache_facts("auto", "f16") == []
    assert kv_cache_facts("on", "q8_0") == ["KV q8_0", "flash attention on"]


# ---- run ------------------------------------------------------------------------------------


def test_run_options_reach_the_engine_config(engine_loads, r1_prefill_model):
    result = invoke("run", "-m", r1_prefill_model, "--no-log", "--draft", r1_prefill_model,
                    "--draft-max", 8, "--draft-min", 2, "--kv-type", "q8_0",
                    "--flash-attn", "on", "hi")
    assert result.exit_code == 0, result.output
    (config,) = engine_loads
    assert (config.draft, config.draft_max, config.draft_min) == (r1_prefill_model, 8, 2)
    assert (config.kv_type, config.flash_attn) == ("q8_0", "on")


def test_run_takes_config_toml_and_the_command_line_wins(engine_loads, r1_prefill_model):
    write_config('draft_model = "lookup"\ndraft_max = 4\nkv_type = "q4_0"\n')
    assert invoke("run", "-m", r1_prefill_model, "--no-log", "hi").exit_code == 0
    assert invoke("run", "-m", r1_prefill_model, "--no-log", "--draft", "none",
                  "--kv-type", "f16", "--draft-max", 6, "hi").exit_code == 0
    configured, typed = engine_loads
    assert (configured.draft, configured.draft_max, configured.kv_type) == ("lookup", 4, "q4_0")
    assert (typed.draft, typed.draft_max, typed.kv_type) == (None, 6, "f16")


def test_without_draft_options_the_defaults_load(engine_loads, r1_prefill_model):
    assert invoke("run", "-m", r1_prefill_model, "--no-log", "hi").exit_code == 0
    (config,) = engine_loads
    assert (config.draft, config.draft_max, config.draft_min) == (None, 16, 0)
    assert (config.kv_type, config.flash_attn) == ("f16", "auto")


def test_run_draft_errors_are_one_line(r1_prefill_model, tmp_path):
    assert_one_line_error(localr1("run", "-m", r1_prefill_model, "--draft", "r1:1.5b", "hi"),
                          "draft model 'r1:1.5b", "localr1 pull r1:1.5b")
    assert_one_line_error(localr1("run", "-m", r1_prefill_model, "--draft",
                                  tmp_path / "gone.gguf", "hi"), "draft model:", "no such file")
    write_config('draft_model = "r1:1.5b"\n')  # the same from config.toml...
    assert_one_line_error(localr1("run", "-m", r1_prefill_model, "hi"), "localr1 pull r1:1.5b")
    turned_off = localr1("run", "-m", r1_prefill_model, "--draft", "none", "hi")  # ...or off
    assert turned_off.returncode == 0, turned_off.stderr
    assert turned_off.stdout == sm.ANSWER_TEXT + "\n"


@pytest.mark.parametrize("args", [
    ("--kv-type", "q5_1"), ("--flash-attn", "maybe"), ("--draft-max", "0"),
    ("--draft-max", "300"), ("--draft-min", "-1"), ("--draft", " "),
    ("--draft-min", "9", "--draft-max", "4"),
])
def test_bad_values_are_usage_errors(args, r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, *args, "hi")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_bad_config_value_names_file_and_key(r1_prefill_model):
    write_config('kv_type = "q5_1"\n')
    result = localr1("run", "-m", r1_prefill_model, "hi")
    assert_one_line_error(result, "config.toml", "kv_type")


@pytest.mark.parametrize("command", ["run", "batch", "chat"])
def test_draft_with_endpoint_is_a_usage_error(command):
    # Refused before any connection: nothing listens on port 9.
    result = localr1(command, "--endpoint", "http://127.0.0.1:9/v1", "--draft", "lookup",
                     *(["hi"] if command == "run" else []), input="hi\n")
    assert result.returncode == 2, result.stderr
    assert "--draft cannot be used with --endpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---- run's output ---------------------------------------------------------------------------


def test_speculative_summary_and_line():
    assert speculative_summary(draft_turn_stats(0, 0), None) is None
    assert speculative_summary(draft_turn_stats(400, 312), "r1:1.5b") == {
        "draft": "r1:1.5b", "drafted": 400, "accepted": 312, "acceptance_rate": 0.78}
    assert speculative_summary(draft_turn_stats(0, 0), "lookup")["acceptance_rate"] is None
    assert acceptance_line(draft_turn_stats(400, 312)) == "312/400 tokens accepted (78%)"
    assert acceptance_line(draft_turn_stats(0, 0)) == "nothing drafted"


class _Terminal:
    """A stream that says it is a terminal, keeping what was written."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_run_prints_acceptance_on_a_terminal_only_with_a_draft():
    from localr1.cli.turn_printer import TurnPrinter
    from localr1.engine.events import AnswerDelta, TurnDone

    def stderr_of(draft, json_output=False):
        err = _Terminal()
        printer = TurnPrinter(stdout=_Terminal(), stderr=err, draft=draft,
                              json_output=json_output)
        printer.handle(AnswerDelta("ok"))
        printer.handle(TurnDone(draft_turn_stats(400, 312)))
        return err.text, printer

    with_draft, printer = stderr_of("r1:1.5b")
    assert with_draft.splitlines()[-1] == "draft: 312/400 tokens accepted (78%)"
    assert "draft:" not in stderr_of(None)[0]
    quiet, printer = stderr_of("r1:1.5b", json_output=True)
    assert quiet == ""
    assert json.loads(printer.as_json("m"))["speculative"]["accepted"] == 312


def test_run_json_has_speculative_null_without_a_draft(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--json", "hi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["speculative"] is None


# ---- real drafting: the scripted model as its own draft, and lookup ---------------------------


def test_run_with_a_draft_gives_the_same_text_and_says_what_it_accepted(models_dir,
                                                                        r1_prefill_model):
    # A copy: the same file under two names would be named as the model is.
    shutil.copyfile(r1_prefill_model, models_dir / "tiny-draft.gguf")
    common = ("run", "-m", r1_prefill_model, "--no-log", "--json", "--temperature", "0")
    plain = json.loads(localr1(*common, "hi").stdout)
    drafted_run = localr1(*common, "--draft", "tiny-draft", "hi")
    assert drafted_run.returncode == 0, drafted_run.stderr
    drafted = json.loads(drafted_run.stdout)
    assert (drafted["reasoning"], drafted["answer"]) == (plain["reasoning"], plain["answer"])
    assert plain["speculative"] is None
    spec = drafted["speculative"]
    assert spec["draft"] == "tiny-draft"  # its library name, not the GGUF's own
    assert spec["drafted"] > 0 and spec["accepted"] == spec["drafted"]
    assert spec["acceptance_rate"] == 1.0
    lookup = json.loads(localr1(*common, "--draft", "lookup", "hi").stdout)
    assert lookup["answer"] == plain["answer"] and lookup["speculative"]["draft"] == "lookup"


def test_run_on_a_terminal_ends_with_the_acceptance_line(r1_prefill_model):
    code, screen = run_in_terminal("run", "-m", r1_prefill_model, "--no-log", "--temperature",
                                   "0", "--draft", r1_prefill_model, "hi")
    assert code == 0, screen
    last = screen.strip().splitlines()[-1]
    assert last.startswith("draft: ") and last.endswith("tokens accepted (100%)"), last
    code, screen = run_in_terminal("run", "-m", r1_prefill_model, "--no-log", "hi")
    assert code == 0 and "draft:" not in screen


def test_batch_records_say_what_the_draft_accepted(r1_prefill_model):
    result = localr1("batch", "-m", r1_prefill_model, "--temperature", "0", "--parallel", "2",
                     "--draft", r1_prefill_model, "--format", "text", input="hi\nhello\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["answer"] == sm.ANSWER_TEXT
        spec = record["speculative"]
        assert spec["draft"] == r1_prefill_model.stem
        assert spec["drafted"] > 0 and spec["accepted"] == spec["drafted"]
    plain = localr1("batch", "-m", r1_prefill_model, "--format", "text", input="hi\n")
    assert json.loads(plain.stdout)["speculative"] is None


# ---- batch, serve, doctor, chat -------------------------------------------------------------


def test_batch_options_reach_the_engine_config(engine_loads, r1_prefill_model):
    result = invoke("batch", "-m", r1_prefill_model, "--draft", "lookup", "--draft-max", 5,
                    "--kv-type", "q8_0", "--format", "text", input="hi\n")
    assert result.exit_code == 0, result.output
    config = engine_loads[0]
    assert (config.draft, config.draft_max, config.kv_type) == ("lookup", 5, "q8_0")
    record = json.loads(result.stdout.splitlines()[0])
    assert "speculative" in record


def test_batch_missing_draft_is_one_line(r1_prefill_model):
    assert_one_line_error(localr1("batch", "-m", r1_prefill_model, "--draft", "r1:1.5b",
                                  input="hi\n"), "localr1 pull r1:1.5b")


def test_serve_missing_draft_is_one_line_before_listening(r1_prefill_model):
    assert_one_line_error(localr1("serve", "-m", r1_prefill_model, "--port", "0",
                                  "--draft", "r1:1.5b"), "draft model 'r1:1.5b")


def test_doctor_model_test_uses_the_options(engine_loads, r1_prefill_model):
    result = invoke("doctor", "--json", "--model", r1_prefill_model, "--kv-type", "q8_0",
                    "--draft", "lookup")
    model_test = json.loads(result.stdout)[-1]
    assert model_test["name"] == "model test" and model_test["status"] == "ok", model_test
    assert (engine_loads[-1].kv_type, engine_loads[-1].draft) == ("q8_0", "lookup")


def test_doctor_reports_a_missing_draft_and_needs_model(r1_prefill_model):
    result = invoke("doctor", "--json", "--model", r1_prefill_model, "--draft", "r1:1.5b")
    model_test = json.loads(result.stdout)[-1]
    assert model_test["status"] == "fail"
    assert "is not installed; run: localr1 pull r1:1.5b" in model_test["detail"]
    alone = localr1("doctor", "--draft", "lookup")
    assert alone.returncode == 2 and "need --model" in alone.stderr


def test_chat_missing_draft_is_one_line_before_the_app(r1_prefill_model):
    assert_one_line_error(localr1("chat", "-m", r1_prefill_model, "--draft", "r1:1.5b"),
                          "localr1 pull r1:1.5b")


def test_show_says_the_configured_kv_cache_and_draft(models_dir, r1_prefill_model):
    (models_dir / "tiny.gguf").symlink_to(r1_prefill_model)
    plain = json.loads(invoke("show", "tiny", "--json").stdout)
    assert "kv_cache" not in plain and "draft" not in plain
    write_config('kv_type = "q8_0"\nflash_attn = "on"\ndraft_model = "lookup"\n')
    shown = json.loads(invoke("show", "tiny", "--json").stdout)
    assert shown["kv_cache"] == "KV q8_0, flash attention on"
    assert shown["draft"] == "lookup"
