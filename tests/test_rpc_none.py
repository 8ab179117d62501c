"""`--rpc none`: no RPC workers for one command, whatever config.toml's `rpc` says (as `--draft
none` turns a configured draft off). config.toml here names a worker that is not there
(127.0.0.1:1), so any command that still used it would fail or say so."""

from __future__ import annotations

import json

import pytest

from localr1.cli.engine_options import EngineFlags, check_rpc
from localr1.config import Settings
from localr1.paths import app_paths
from tests.fixtures import scripted_models as sm
from tests.test_rpc_run import write_config
from tests.test_run_cli import localr1

NOWHERE = "127.0.0.1:1"


@pytest.fixture
def config_rpc():
    write_config(f'rpc = ["{NOWHERE}"]\n')


@pytest.mark.parametrize("value", ["none", "None", " none "])
def test_none_is_no_workers_over_the_configs(value, tmp_path):
    assert check_rpc(None, None, value) == ()
    flags = EngineFlags(rpc=check_rpc(None, None, value))
    configured = Settings(rpc=(NOWHERE,))
    assert flags.typed_settings() == {"rpc": ()}
    assert flags.settings_over(configured).rpc == ()
    assert flags.engine_overrides(configured, tmp_path)["rpc"] == ()
    assert EngineFlags().settings_over(configured).rpc == (NOWHERE,)  # not given: config's


def test_none_goes_alone(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--rpc", f"none,{NOWHERE}", "hi")
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--rpc': none: expected HOST:PORT" in result.stderr


def test_run_with_rpc_none_runs_here(r1_prefill_model, config_rpc):
    configured = localr1("run", "-m", r1_prefill_model, "--json", "--no-log", "hi")
    assert configured.returncode == 1, configured.stderr  # config's worker is not there
    result = localr1("run", "-m", r1_prefill_model, "--json", "--no-log", "--rpc", "none", "hi")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["answer"] == sm.ANSWER_TEXT
    assert "RPC" not in answer["placement"], answer["placement"]


def test_doctor_model_with_rpc_none_runs_here(r1_prefill_model, config_rpc):
    def model_test(*args: str) -> str:
        result = localr1("doctor", "--model", r1_prefill_model, *args)
        return next(line for line in result.stdout.splitlines() if "model test" in line)

    assert model_test().startswith("FAIL") and NOWHERE in model_test()
    line = model_test("--rpc", "none")
    assert line.startswith("ok") and "runs on" in line and "RPC" not in line, line


def test_list_and_show_with_rpc_none_count_no_workers(r1_prefill_model, config_rpc):
    models = app_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "tiny-r1.gguf").symlink_to(r1_prefill_model)
    configured = localr1("list", "--json")
    assert configured.returncode == 0, configured.stderr
    assert json.loads(configured.stdout)[0]["workers"]["counted"] is False
    assert NOWHERE in configured.stderr
    listed = localr1("list", "--json", "--rpc", "none")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["workers"] is None and row["fit"] == "CPU only, fits in RAM"
    table = localr1("list", "--rpc", "none")
    assert table.stderr == "" and "local only" not in table.stdout
    shown = localr1("show", "tiny-r1", "--rpc", "none")
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    fit_line = next(line for line in shown.stdout.splitlines() if line.startswith("fit"))
    assert "CPU only, fits in RAM" in fit_line and "local only" not in fit_line
