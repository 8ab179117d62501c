"""Model names before files in the working directory: in a folder holding a `gemma` folder and
empty `smollm2` and `r1` files, `-m gemma`, `-m smollm2` and `-m r1` still mean the installed
and catalog models, in every command; a path (a slash, `.gguf`) or a bare word no model has
still means the file."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.config import Settings
from localr1.models.choice import choose_model
from localr1.models.library import find_installed, names_a_path, resolve_model
from localr1.paths import app_paths
from localr1.store import Store
from localr1.tui.app import LocalR1App
from localr1.tui.prefs import TuiPrefs
from localr1.tui.screens.welcome import WelcomeScreen
from tests.tui.conftest import SIZE, wait_for


def localr1(*args: str, input: str | None = None):  # noqa: A002 - click's name
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture()
def crowded_cwd(tmp_path, monkeypatch, r1_prefill_model, r1_original_model):
    """`gemma` registered (imported), `smollm2` a GGUF in the models folder; the working
    directory holds a `gemma` folder, empty `smollm2` and `r1` files and a GGUF `loose`."""
    assert localr1("import", r1_prefill_model, "--name", "gemma").exit_code == 0
    models_dir = app_paths().models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(r1_original_model, models_dir / "smollm2.gguf")
    cwd = tmp_path / "work"
    (cwd / "gemma").mkdir(parents=True)
    (cwd / "smollm2").write_bytes(b"")
    (cwd / "r1").write_bytes(b"")
    shutil.copy(r1_original_model, cwd / "loose")
    monkeypatch.chdir(cwd)
    return models_dir


def test_the_rule():
    for path in ("./gemma", "models/gemma", "gemma.gguf", "GEMMA.GGUF", "~/m.gguf", "/tmp/x"):
        assert names_a_path(path), path
    for name in ("gemma", "r1", "r1:7b", "smollm2", "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M"):
        assert not names_a_path(name), name


def test_resolve_prefers_models_and_falls_back_to_files(crowded_cwd, r1_prefill_model):
    assert resolve_model("gemma", crowded_cwd) == r1_prefill_model
    assert resolve_model("smollm2", crowded_cwd) == crowded_cwd / "smollm2.gguf"
    assert resolve_model("loose", crowded_cwd).name == "loose"  # no model has that name
    with pytest.raises(Exception, match="is a folder"):
        resolve_model("./gemma", crowded_cwd)
    assert resolve_model("./smollm2", crowded_cwd).name == "smollm2"  # the path, as typed


def test_run(crowded_cwd):
    for name in ("gemma", "smollm2", "loose"):
        result = localr1("run", "-m", name, "--json", "--no-log", "hi")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["model"] == name
    not_pulled = localr1("run", "-m", "r1", "hi")
    assert not_pulled.exit_code == 1
    assert "model 'r1:1.5b-q4_k_m' is not installed; run: localr1 pull r1" in not_pulled.stderr
    folder = localr1("run", "-m", "./gemma", "hi")
    assert folder.exit_code == 1 and "is a folder" in folder.stderr
    empty = localr1("run", "-m", "./smollm2", "hi")
    assert empty.exit_code == 1 and "smollm2" in empty.stderr


def test_chat_chooses_the_model(crowded_cwd, r1_prefill_model):
    # `localr1 chat -m NAME` resolves through choose_model (run_chat), leniently.
    chosen = choose_model("gemma", Settings(), app_paths(), lenient=True)
    assert (chosen.path, chosen.name) == (r1_prefill_model, "gemma")
    assert choose_model("smollm2", Settings(), app_paths(), lenient=True).name == "smollm2"


def test_show_and_rm(crowded_cwd):
    shown = localr1("show", "smollm2")
    assert shown.exit_code == 0, shown.output
    assert str(crowded_cwd / "smollm2.gguf") in shown.stdout
    assert "installed       no (localr1 pull r1:1.5b-q4_k_m)" in localr1("show", "r1").stdout
    assert localr1("rm", "--yes", "gemma").stdout.startswith("forgot gemma;")
    assert find_installed("gemma", crowded_cwd) is None


def test_batch(crowded_cwd):
    result = localr1("batch", "-m", "gemma", input="hello\n")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["model"] == "gemma" and record["error"] is None


async def test_welcome_screen_path_box(crowded_cwd, tmp_path):
    with Store.open(tmp_path / "history.db") as store:
        app = LocalR1App(store=store, settings=Settings(gpu_layers=0), prefs=TuiPrefs(),
                         paths=app_paths())
        await _type_a_name_in_the_path_box(app, crowded_cwd)


async def _type_a_name_in_the_path_box(app, models_dir):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen)
        app.screen.query_one("#model_path").value = "smollm2"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.model_state == "ready", what="the model")
        assert app.model_path == models_dir / "smollm2.gguf"
