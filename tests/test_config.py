"""Paths and config.toml: relocation by environment, typed settings, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localr1.config import Settings, load_settings, parse_gpu_layers, render_settings_toml
from localr1.errors import ConfigError
from localr1.paths import app_paths


def test_localr1_home_relocates_everything(tmp_path):
    paths = app_paths({"LOCALR1_HOME": str(tmp_path)})
    for path in (paths.config_file, paths.models_dir, paths.db_path, paths.cache_dir):
        assert tmp_path in path.parents


def test_single_overrides_win_over_home(tmp_path):
    env = {"LOCALR1_HOME": str(tmp_path / "home"), "LOCALR1_MODELS": str(tmp_path / "m"),
           "LOCALR1_DB": str(tmp_path / "x.db")}
    paths = app_paths(env)
    assert paths.models_dir == tmp_path / "m"
    assert paths.db_path == tmp_path / "x.db"
    assert paths.config_file == tmp_path / "home" / "config.toml"


def test_platformdirs_defaults_use_app_name_without_author():
    paths = app_paths({})
    assert paths.config_dir.name == "localr1"
    assert paths.data_dir.name == "localr1"
    assert "localr1" not in paths.data_dir.parent.name  # no author folder


def test_missing_config_gives_r1_defaults(tmp_path):
    settings = load_settings(tmp_path / "config.toml")
    assert settings == Settings()
    assert settings.sampling.temperature == 0.6
    assert settings.sampling.top_p == 0.95
    # Set explicitly (disabled) so llama.cpp's generic top_k 40 / min_p 0.05 never apply.
    assert settings.sampling.top_k == 0 and settings.sampling.min_p == 0.0


def test_full_config_is_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'default_model = "r1:7b"\ncontext_size = 4096\ngpu_layers = 12\nthreads = 4\n'
        "max_tokens = 2000\nreasoning_budget = 512\n\n[sampling]\ntemperature = 0.5\n"
        "top_p = 0.9\ntop_k = 20\nmin_p = 0.01\nseed = 7\n"
    )
    settings = load_settings(path)
    assert settings.default_model == "r1:7b"
    assert (settings.context_size, settings.gpu_layers, settings.threads) == (4096, 12, 4)
    assert (settings.max_tokens, settings.reasoning_budget) == (2000, 512)
    assert settings.sampling.temperature == 0.5 and settings.sampling.top_k == 20
    assert settings.sampling.seed == 7


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("context_size = 4096\ntemperature = \n", ":2:", "Invalid value"),
        ('default_model = "a"\n[sampling]\ntemperature = "hot"\n', ":3:1:", "must be float"),
        ("context_size = 4096\ncolour = 3\n", ":2:1:", "unknown setting 'colour'"),
        ("[sampling]\ntop_p = 1.5\n", ":2:1:", "'top_p' must be in (0, 1]"),
        ('gpu_layers = "most"\n', ":1:1:", "gpu_layers"),
        ("threads = true\n", ":1:1:", "must be int"),
        ("[sampling\n", ":1:", ""),
    ],
)
def test_bad_config_names_file_line_and_column(tmp_path, text, where, words):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}{where}"), message
    assert words in message
    assert "\n" not in message


def test_cli_reports_bad_config_in_one_line(tmp_path):
    (tmp_path / "config.toml").write_text("[sampling]\ntemperature = 'x'\n")
    result = subprocess.run([sys.executable, "-m", "localr1", "config", "show"],
                            capture_output=True, text=True,
                            env={"LOCALR1_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "config.toml:2:1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_path_and_show(tmp_path):
    env = {"LOCALR1_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "localr1", "config", "path"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == str(tmp_path / "config.toml")
    (tmp_path / "config.toml").write_text('default_model = "m"\n[sampling]\ntemperature = 0.7\n')
    shown = subprocess.run([sys.executable, "-m", "localr1", "config", "show"],
                           capture_output=True, text=True, env=env, check=True).stdout
    assert 'default_model = "m"' in shown and "temperature = 0.7" in shown


def test_render_round_trips(tmp_path):
    settings = Settings(default_model="x", gpu_layers=3)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(line for line in render_settings_toml(settings).splitlines()))
    assert load_settings(path) == settings


def test_gpu_layers_parsing():
    assert parse_gpu_layers("auto") == "auto"
    assert parse_gpu_layers("all") == -1
    assert parse_gpu_layers("0") == 0
    assert parse_gpu_layers("33") == 33
    with pytest.raises(ValueError):
        parse_gpu_layers("-5")


def test_set_default_model_keeps_the_rest_of_the_file(tmp_path):
    from localr1.config import set_default_model

    path = tmp_path / "config.toml"
    set_default_model(path, "r1:7b")  # no file yet
    assert path.read_text() == 'default_model = "r1:7b"\n'
    path.write_text("# my settings\ncontext_size = 4096  # short\n\n"
                    "[sampling]\ntemperature = 0.5\n")
    set_default_model(path, 'odd "name"')
    assert path.read_text() == ('# my settings\ncontext_size = 4096  # short\n'
                                'default_model = "odd \\"name\\""\n\n[sampling]\n'
                                'temperature = 0.5\n')
    set_default_model(path, "r1")  # replaced in place, not added twice
    assert path.read_text().count("default_model") == 1
    assert load_settings(path).default_model == "r1"
    assert load_settings(path).sampling.temperature == 0.5


def test_set_default_model_never_rewrites_a_broken_file(tmp_path):
    from localr1.config import set_default_model

    path = tmp_path / "config.toml"
    path.write_text("context_size = = 3\n")
    with pytest.raises(ConfigError, match=r"config.toml:1:"):
        set_default_model(path, "r1")
    assert path.read_text() == "context_size = = 3\n"
