"""The draft model suggested for a Qwen R1 distill: after `localr1 pull` (against the loopback
Hub) and in the listing rows the model manager shows."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.models.catalog import load_catalog
from localr1.models.draft_suggestion import suggest_draft
from localr1.models.library import list_models
from localr1.models.listing import installed_rows
from localr1.models.registry import ModelRegistry
from localr1.paths import app_paths
from tests.fixtures import scripted_models as sm
from tests.hub_server import hub_for_tests
from tests.test_kv_memory import machine, write_config

REPOS = {  # catalog name: (repo, file)
    "r1:1.5b": ("bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
                "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"),
    "r1:7b": ("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
              "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"),
    "r1:7b-q8_0": ("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
                   "DeepSeek-R1-Distill-Qwen-7B-Q8_0.gguf"),
    "r1:1.5b-q8_0": ("bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF",
                     "DeepSeek-R1-Distill-Qwen-1.5B-Q8_0.gguf"),
    "r1:8b": ("bartowski/DeepSeek-R1-Distill-Llama-8B-GGUF",
              "DeepSeek-R1-Distill-Llama-8B-Q4_K_M.gguf"),
}
PULL_TIP = "tip: speed it up with a draft model: localr1 pull r1:1.5b, then --draft r1:1.5b"
DRAFT_TIP = "tip: speed it up with a draft model: --draft r1:1.5b"


@pytest.fixture()
def hub(monkeypatch, tmp_path, r1_prefill_model):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as running:
        for repo, file in REPOS.values():
            running.add_file(repo, file, r1_prefill_model)
        yield running


def pull(name: str):
    result = CliRunner().invoke(cli, ["pull", name])
    assert result.exit_code == 0, result.output
    return result


def test_pull_suggests_r1_1_5b_for_a_qwen_distill(hub):
    first = pull("r1:7b")
    assert first.stderr.splitlines()[-1] == PULL_TIP
    assert "tip" not in first.stdout  # stdout stays the pulled path alone
    assert "tip" not in pull("r1").stderr  # the draft itself
    again = pull("r1:7b")  # already installed; now the draft is too
    assert "already installed" in again.stdout
    assert again.stderr.splitlines()[-1] == DRAFT_TIP


def test_the_suggested_command_drafts(hub):
    """What the tip says to run works: the draft proposes tokens, and at temperature 0 the
    answer is the one without it (both files are the scripted R1 model)."""
    pull("r1:7b")
    assert pull("r1").exit_code == 0
    runs = {}
    for draft in ("none", "r1:1.5b"):
        result = CliRunner().invoke(cli, ["run", "-m", "r1:7b", "--draft", draft,
                                          "--temperature", "0", "--json", "hi"])
        assert result.exit_code == 0, result.output
        runs[draft] = json.loads(result.stdout)
    assert runs["r1:1.5b"]["answer"] == runs["none"]["answer"] == sm.ANSWER_TEXT
    assert runs["r1:1.5b"]["reasoning"] == runs["none"]["reasoning"]
    assert runs["none"]["speculative"] is None
    drafted = runs["r1:1.5b"]["speculative"]
    assert drafted["drafted"] > 0 and drafted["accepted"] == drafted["drafted"]


def test_no_suggestion_for_a_llama_distill_or_with_a_draft_configured(hub):
    assert "tip" not in pull("r1:8b").stderr  # another vocabulary
    write_config('draft_model = "lookup"\n')
    assert "tip" not in pull("r1:7b").stderr
    write_config('draft_model = "none"\n')
    assert pull("r1:7b").stderr.splitlines()[-1] == PULL_TIP


def test_another_installed_quant_of_the_draft_is_named_as_installed(hub):
    pull("r1:1.5b-q8_0")
    assert pull("r1:7b-q8_0").stderr.splitlines()[-1] == \
        "tip: speed it up with a draft model: --draft r1:1.5b-q8_0"


def test_a_model_pulled_by_its_hub_name_is_matched_by_repo(hub):
    pull("r1:7b")
    registry = ModelRegistry.default()
    (model,) = registry.models()
    plain = dataclasses.replace(model, catalog_name=None)  # as if pulled by OWNER/REPO:QUANT
    suggestion = suggest_draft(plain, load_catalog(), [plain])
    assert suggestion is not None and suggestion.cli_text == PULL_TIP


def test_listing_rows_carry_the_tip_the_model_manager_shows(hub):
    pull("r1:7b")
    pull("r1:8b")
    rows = {row.name: row for row in installed_rows(app_paths().models_dir, machine(64))}
    assert rows["r1:8b-q4_k_m"].draft_tip is None
    tip = rows["r1:7b-q4_k_m"].draft_tip
    assert tip is not None and not tip.installed
    assert tip.tui_text == ('tip: a draft model speeds this one up: pull r1:1.5b (below), then '
                            'draft_model = "r1:1.5b" in config.toml')
    pull("r1")
    rows = {row.name: row for row in installed_rows(app_paths().models_dir, machine(64))}
    assert rows["r1:1.5b-q4_k_m"].draft_tip is None
    assert rows["r1:7b-q4_k_m"].draft_tip.tui_text == \
        'tip: r1:1.5b can draft for this model and speed it up: draft_model = "r1:1.5b" in ' \
        'config.toml'
    # With that set, the tip goes and the fit counts the draft.
    write_config('draft_model = "r1:1.5b"\n')
    rows = {row.name: row for row in installed_rows(app_paths().models_dir, machine(64))}
    assert rows["r1:7b-q4_k_m"].draft_tip is None
    assert rows["r1:7b-q4_k_m"].fit_label.endswith("(with draft)")
    assert not rows["r1:1.5b-q4_k_m"].fit_label.endswith("(with draft)")
    listed = {line.split()[0]: line for line in
              CliRunner().invoke(cli, ["list"]).stdout.splitlines()[1:]}
    assert "(with draft)" in listed["r1:7b-q4_k_m"]
    assert "(with draft)" not in listed["r1:1.5b-q4_k_m"]
    available = CliRunner().invoke(cli, ["list", "--available"]).stdout
    assert "(with draft)" in next(line for line in available.splitlines()
                                  if line.startswith("r1:14b-q4_k_m"))
    assert len(list_models(app_paths().models_dir)) == 3
