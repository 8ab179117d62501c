"""Each model capability exists once in the core (models.choice, listing, pull_plan, durations,
ChatSession.save_answered) and the CLI front ends show what it computes: the model's name in the
history, the list rows, the pull's fit text, ages, and batch --save."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.config import Settings
from localr1.durations import format_age, format_duration, format_seconds
from localr1.errors import ModelFileError
from localr1.models import fit
from localr1.models.catalog import load_catalog
from localr1.models.choice import ChosenModel, choose_model, name_model, record_use
from localr1.models.listing import catalog_rows, installed_rows
from localr1.models.registry import ModelRegistry
from localr1.models.split_names import model_name
from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.hub_server import hub_for_tests

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
FIXED_MACHINE = fit.MachineMemory(16 * 10**9, 32 * 10**9, False, 0, "CPU")


def localr1(*args, input: str | None = None):  # noqa: A002 - click's name
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture()
def tiny(tmp_path, r1_prefill_model):
    """The scripted model as /somewhere/else/tiny.gguf: a GGUF outside the models folder."""
    path = tmp_path / "somewhere" / "else" / "tiny.gguf"
    path.parent.mkdir(parents=True)
    path.symlink_to(r1_prefill_model)
    return path


@pytest.fixture()
def fixed_machine(monkeypatch):
    monkeypatch.setattr(fit, "machine_memory", lambda: FIXED_MACHINE)


# ---- 1. the model and its name -------------------------------------------------------------


def test_run_by_path_records_the_file_name_and_continues_by_it(tiny):
    first = localr1("run", "-m", tiny, "--json", "hi")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["model"] == "tiny"
    table = localr1("history", "list").stdout.splitlines()
    assert table[1].split()[3] == "tiny" and str(tiny.parent) not in table[1]
    (listed,) = json.loads(localr1("history", "list", "--json").stdout)
    assert listed["model"] == "tiny"
    # Remembered in place under that name, so -c finds the file again.
    registered = ModelRegistry.default().get("tiny")
    assert registered is not None and registered.path == tiny and not registered.owned
    again = localr1("run", "-c", "--json", "and again")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["conversation_id"] == listed["id"]
    assert localr1("list").stdout.splitlines()[1].split()[0] == "tiny"


def test_a_conversation_goes_on_with_the_model_of_its_newest_answer(tiny, r1_original_model):
    first = json.loads(localr1("run", "-m", tiny, "--json", "hi").stdout)
    switched = localr1("run", "-c", "-m", r1_original_model, "--json", "and now?")
    assert switched.exit_code == 0, switched.output
    assert json.loads(switched.stdout)["conversation_id"] == first["conversation_id"]
    (listed,) = json.loads(localr1("history", "list", "--json").stdout)
    assert listed["model"] == r1_original_model.stem  # not the model it started with
    again = json.loads(localr1("run", "-c", "--json", "and again?").stdout)
    assert again["model"] == r1_original_model.stem  # -c continues with the newest model


def test_a_model_dropped_into_the_models_folder_shows_when_it_was_used(r1_prefill_model):
    folder = app_paths().models_dir
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(r1_prefill_model, folder / "dropped.gguf")
    assert localr1("list").stdout.splitlines()[1].split()[-1] == "never"
    assert localr1("run", "-m", "dropped", "hi").exit_code == 0
    row = localr1("list").stdout.splitlines()[1]
    assert row.split()[0] == "dropped" and row.endswith("just now")
    assert localr1("rm", "--yes", "dropped").exit_code == 0  # still the folder's own file
    assert not (folder / "dropped.gguf").exists()


def test_run_without_logging_remembers_nothing(tiny):
    result = localr1("run", "--no-log", "-m", tiny, "--json", "hi")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "tiny"
    assert ModelRegistry.default().models() == []


def test_choose_model_order_and_names(tmp_path, tiny, r1_original_model):
    paths = app_paths()
    models_dir = paths.models_dir
    models_dir.mkdir(parents=True)
    os.link(r1_original_model, models_dir / "folder-one.gguf")  # another file, same bytes
    assert localr1("import", r1_original_model, "--name", "mine").exit_code == 0
    settings = Settings(default_model="folder-one")

    assert choose_model(str(tiny), settings, paths) == ChosenModel(tiny, "tiny", False)
    assert choose_model(None, settings, paths, conversation_model="mine") == \
        ChosenModel(r1_original_model, "mine", True)
    assert choose_model(None, settings, paths) == \
        ChosenModel(models_dir / "folder-one.gguf", "folder-one", True)
    assert choose_model(None, Settings(), paths) is None
    # A conversation whose model is gone: an error for run, the default for the TUI.
    with pytest.raises(ModelFileError):
        choose_model(None, settings, paths, conversation_model=str(tmp_path / "gone.gguf"))
    assert choose_model(None, settings, paths, conversation_model=str(tmp_path / "gone.gguf"),
                        lenient=True).name == "folder-one"
    assert choose_model(None, Settings(), paths, lenient=True).name == "folder-one"
    # The same file named by its path gets its library name, never the path.
    assert name_model(r1_original_model, models_dir).name == "mine"
    assert model_name(tmp_path / "big-Q8_0-00001-of-00003.gguf") == "big-Q8_0"


def test_remembering_a_path_whose_name_is_taken_adds_a_number(tmp_path, tiny,
                                                              r1_original_model):
    other = tmp_path / "other" / "tiny.gguf"
    other.parent.mkdir()
    other.symlink_to(r1_original_model)
    models_dir = app_paths().models_dir
    first = record_use(name_model(tiny, models_dir), models_dir, remember=True)
    second = record_use(name_model(other, models_dir), models_dir, remember=True)
    assert (first.name, second.name) == ("tiny", "tiny-2")
    assert name_model(other, models_dir) == ChosenModel(other, "tiny-2", True)
    assert ModelRegistry.default().get("tiny").last_used is not None


def test_doctor_names_the_model_the_same_way(tiny):
    result = localr1("doctor", "--model", tiny)
    assert "model test" in result.stdout and "tiny: runs on CPU" in result.stdout


# ---- 2. a pull's plan and fit --------------------------------------------------------------


def test_pull_prints_the_planned_fit(monkeypatch, tmp_path, r1_prefill_model, fixed_machine):
    from localr1.models.pull_plan import plan_pull

    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as server:
        server.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        planned = plan_pull("r1")
        assert planned.size_text == "45.0 MB" and planned.too_large_question is None
        result = localr1("pull", "r1")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == \
        f"r1:1.5b-q4_k_m: {R1_REPO} (45.0 MB); {planned.fit_text}"
    assert planned.fit_text.startswith(fit.CPU_IN_RAM + ", speed unknown (needs about ")


# ---- 3. list rows and 4. ages --------------------------------------------------------------


def test_list_rows_come_from_listing(r1_prefill_model, fixed_machine):
    assert localr1("import", r1_prefill_model, "--name", "mine").exit_code == 0
    ModelRegistry.default().mark_used("mine", when=time.time() - 5 * 60 - 3)
    (row,) = installed_rows(app_paths().models_dir)
    assert (row.name, row.quant, row.parameters, row.fit_label, row.last_used) == \
        ("mine", "F16", "19.5M", fit.CPU_IN_RAM, "5 min ago")
    line = localr1("list").stdout.splitlines()[1]
    assert line.split()[:4] == ["mine", "45.0", "MB", "F16"]
    assert line.endswith(f"{fit.CPU_IN_RAM}  {row.speed}  5 min ago")
    assert json.loads(localr1("list", "--json").stdout) == [row.to_json()]
    catalog = catalog_rows(load_catalog(), app_paths().models_dir)
    assert json.loads(localr1("list", "--available", "--json").stdout) == \
        [r.to_json() for r in catalog]


def test_one_style_for_durations_and_ages():
    assert [format_seconds(s) for s in (0.01, 0.3, 12.34)] == ["<0.1 s", "0.3 s", "12.3 s"]
    assert [format_duration(s) for s in (42, 185, 7620)] == ["42s", "3m05s", "2h07m"]
    assert [format_age(s) for s in (5, 303, 3 * 3600, 3 * 86400, float("nan"))] == \
        ["just now", "5 min ago", "3 h ago", "3 days ago", "just now"]


# ---- 5. batch --save through the chat-turn code --------------------------------------------


def test_batch_save_writes_turns_like_run(tiny):
    result = localr1("batch", "-m", tiny, "--save", "-s", "Be brief.", input="one\ntwo\n")
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["model"] for line in result.stdout.splitlines()} == {"tiny"}
    store = Store.open(app_paths().db_path)
    conversations = store.list_conversations()
    assert len(conversations) == 2
    for conversation in conversations:
        assert conversation.model == "tiny" and conversation.system_prompt == "Be brief."
        user, answer = store.branch(conversation.id)
        assert answer.parent_id == user.id and answer.model == "tiny"
        assert answer.content == sm.ANSWER_TEXT and answer.reasoning == sm.REASONING_TEXT
        assert answer.finish_reason == "stop" and answer.thinking_seconds is not None
        assert answer.batch_id == user.batch_id == conversation.params["batch_id"]


def test_a_read_only_data_folder_does_not_stop_a_run_that_logs_nothing(tiny):
    # LAST USED cannot be written there; that bookkeeping must not fail the run. As root (CI)
    # the run drops the capability that ignores file permissions (util-linux's setpriv).
    assert localr1("import", tiny, "--name", "ro-tiny").exit_code == 0
    home = app_paths().data_dir
    modes = {path: path.stat().st_mode for path in (home, *home.iterdir())}
    try:
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        command = [sys.executable, "-m", "localr1", "run", "--no-log", "-m", "ro-tiny", "hi"]
        if os.geteuid() == 0:
            command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--",
                       *command]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == sm.ANSWER_TEXT
        logged = subprocess.run(command[:-4] + ["-m", "ro-tiny", "hi"], capture_output=True,
                                text=True)
        assert logged.returncode == 1 and len(logged.stderr.strip().splitlines()) == 1
        assert "Traceback" not in logged.stderr
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
