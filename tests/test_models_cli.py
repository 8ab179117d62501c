"""`pull`, `list`, `show`, `rm`, `import` as a user runs them; fit labels; progress output;
`run` resolving catalog and installed names."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.cli.pull_progress import PullProgressPrinter
from localr1.errors import ConfigError, ModelFileError
from localr1.models import fit
from localr1.models.catalog import UnknownModelError, load_catalog
from localr1.models.library import mark_used, resolve_model
from localr1.models.pull_events import BytesDone, FileDone, FileStarted, Notice
from localr1.models.registry import ModelRegistry
from localr1.paths import app_paths
from tests.fixtures import scripted_models as sm
from tests.hub_server import file_sha256, hub_for_tests

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
GB = 10**9


def localr1(*args: str, input: str | None = None):  # noqa: A002 - click's name
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert text in lines[-1], result.stderr


@pytest.fixture()
def server(monkeypatch, tmp_path, r1_prefill_model):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as running:
        running.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        yield running


def machine(ram_gb: float, vram_gb: float | None = 0, gpu: bool = False) -> fit.MachineMemory:
    return fit.MachineMemory(int(ram_gb * GB), int(ram_gb * GB), gpu,
                             None if vram_gb is None else int(vram_gb * GB),
                             "CUDA" if gpu else "CPU")


# ---- pull / list / show / rm -----------------------------------------------------------------


def test_pull_list_show_rm(server, r1_prefill_model):
    result = localr1("pull", "r1")
    assert result.exit_code == 0, result.output
    path = app_paths().models_dir / R1_REPO / R1_FILE
    assert result.stdout == f"pulled r1:1.5b-q4_k_m: {path}\n"
    # Not a terminal: plain, sparse lines on stderr; no carriage returns, no bar.
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"r1:1.5b-q4_k_m: {R1_REPO} (45.0 MB); ")
    assert lines[1] == f"{R1_FILE}: pulling 45.0 MB"
    assert lines[2].startswith(f"{R1_FILE}: downloaded (45.0 MB in ")
    assert len(lines) == 3

    again = localr1("pull", "r1:1.5b")
    assert again.exit_code == 0 and "already installed and verified" in again.stdout

    listed = localr1("list")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "QUANT", "PARAMS", "FIT", "SPEED", "LAST", "USED"]
    assert row.split()[:5] == ["r1:1.5b-q4_k_m", "45.0", "MB", "F16", "19.5M"]
    assert row.endswith("never")
    (entry,) = json.loads(localr1("list", "--json").stdout)
    assert entry["name"] == "r1:1.5b-q4_k_m" and entry["path"] == str(path)
    assert entry["sha256"] == file_sha256(r1_prefill_model)
    assert entry["fit"] in fit.FIT_LABELS and entry["last_used"] is None

    mark_used(path)
    assert localr1("list").stdout.splitlines()[1].endswith("just now")

    shown = localr1("show", "r1").stdout
    assert f"sha256          {file_sha256(r1_prefill_model)}" in shown
    for line in ("architecture    qwen2", "context length  4096", "quant           F16",
                 "chat template   DeepSeek-R1, think prefill (the prompt ends in <think>)",
                 f"source          pull ({R1_REPO})", "license         MIT"):
        assert line in shown, shown
    data = json.loads(localr1("show", "--json", "r1:1.5b-q4_k_m").stdout)
    assert data["path"] == str(path)

    kept = localr1("rm", "r1", input="n\n")
    assert kept.exit_code == 1 and path.exists()
    gone = localr1("rm", "r1", input="y\n")
    assert gone.exit_code == 0 and "deleted r1:1.5b-q4_k_m (45.0 MB freed)" in gone.stdout
    assert not path.exists() and not (app_paths().models_dir / "bartowski").exists()
    assert localr1("list").stdout == ""
    assert_one_line_error(localr1("rm", "r1"), "model 'r1:1.5b-q4_k_m' is not installed")


def test_show_a_catalog_model_that_is_not_installed():
    shown = localr1("show", "r1:70b-q8_0").stdout
    assert "installed       no (localr1 pull r1:70b-q8_0)" in shown
    assert "Llama 3.3" in shown and "context length  131072" in shown
    assert "00002-of-00002.gguf" in shown
    assert_one_line_error(localr1("show", "r1:7bb"), "unknown model 'r1:7bb'; did you mean")


def test_pull_errors_are_one_line(server):
    assert_one_line_error(localr1("pull", "nobody/nothing-GGUF:Q4_K_M"),
                          "repository 'nobody/nothing-GGUF' not found")
    assert_one_line_error(localr1("pull", "r1:9b"), "unknown model 'r1:9b'; did you mean")
    assert_one_line_error(localr1("pull", "r1:7b"), "repository 'bartowski/DeepSeek-R1-"
                                                    "Distill-Qwen-7B-GGUF' not found")


def test_pull_asks_before_downloading_a_model_too_large_for_this_machine(server, monkeypatch):
    monkeypatch.setattr(fit, "machine_memory", lambda: machine(ram_gb=0.1))
    refused = localr1("pull", "r1", input="n\n")
    assert refused.exit_code == 1
    assert "too large for this machine" in refused.stderr
    assert "download anyway?" in refused.stderr
    assert server.gets() == []
    accepted = localr1("pull", "--yes", "r1")
    assert accepted.exit_code == 0, accepted.output
    assert len(server.gets()) == 1


def test_ctrl_c_keeps_the_part_and_says_pull_resumes(server, monkeypatch):
    calls = []
    original = PullProgressPrinter.__call__

    def interrupt_midway(self, event):
        original(self, event)
        calls.append(event)
        if isinstance(event, BytesDone) and len(calls) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(PullProgressPrinter, "__call__", interrupt_midway)
    result = localr1("pull", "r1")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1].startswith("localr1: interrupted: kept ")
    assert "`localr1 pull r1` again to resume" in result.stderr
    part = app_paths().models_dir / R1_REPO / (R1_FILE + ".part")
    assert part.stat().st_size > 0


def test_list_available_marks_installed_and_recommended(server, monkeypatch):
    assert localr1("pull", "r1").exit_code == 0
    monkeypatch.setattr(fit, "machine_memory", lambda: machine(48, vram_gb=24, gpu=True))
    rows = {r["name"]: r for r in json.loads(localr1("list", "--available", "--json").stdout)}
    assert len(rows) == 18
    assert rows["r1:1.5b-q4_k_m"]["installed"] and not rows["r1:7b-q4_k_m"]["installed"]
    recommended = sorted(name for name, r in rows.items() if r["recommended"])
    # The largest quant that fits the 24 GB GPU; the 70B only partially: its default quant.
    assert recommended == ["r1:1.5b-q8_0", "r1:14b-q8_0", "r1:32b-q4_k_m", "r1:70b-q4_k_m",
                           "r1:7b-q8_0", "r1:8b-q8_0"]
    assert rows["r1:70b-q4_k_m"]["fit"] == fit.PARTIAL_OFFLOAD
    assert rows["r1:70b-q8_0"]["fit"] == fit.TOO_LARGE
    table = localr1("list", "--available").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PARAMS", "FIT", "SPEED", "NOTES"]
    line = next(t for t in table if t.startswith("r1:1.5b-q4_k_m "))
    assert "= r1:1.5b, r1  installed" in line
    assert next(t for t in table if t.startswith("r1:7b-q8_0 ")).endswith("recommended")


# ---- import ----------------------------------------------------------------------------------


def test_import_registers_in_place_copies_on_request_and_validates(tmp_path, r1_prefill_model,
                                                                   r1_original_model):
    result = localr1("import", r1_prefill_model, "--name", "mine")
    assert result.exit_code == 0, result.output
    assert resolve_model("mine", app_paths().models_dir) == r1_prefill_model
    assert_one_line_error(localr1("import", r1_prefill_model),
                          "is already installed as 'mine'")
    assert_one_line_error(localr1("import", r1_original_model, "--name", "mine"),
                          "the name 'mine' is taken")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(r1_prefill_model.read_bytes()[:20_000_000])
    assert_one_line_error(localr1("import", cut), "truncated GGUF")
    usage = localr1("import")
    assert usage.exit_code == 2 and "give a PATH to a .gguf file, or --scan" in usage.stderr

    copied = localr1("import", "--copy", r1_original_model)
    assert copied.exit_code == 0, copied.output
    copy_path = app_paths().models_dir / "imported" / r1_original_model.name
    assert copy_path.read_bytes() == r1_original_model.read_bytes()
    names = {m["name"]: m for m in json.loads(localr1("list", "--json").stdout)}
    assert set(names) == {"mine", r1_original_model.stem}
    assert names["mine"]["source"] == "import"

    # rm forgets an imported file but deletes our own copy.
    assert localr1("rm", "--yes", "mine").stdout.startswith("forgot mine;")
    assert r1_prefill_model.exists()
    assert localr1("rm", "--yes", r1_original_model.stem).exit_code == 0
    assert not copy_path.exists()


def put_in_hf_cache(hf_home: Path, repo: str, filename: str, source: Path) -> Path:
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / file_sha256(source)
    blob.parent.mkdir(parents=True)
    os.link(source, blob)
    snapshot = folder / "snapshots" / ("b" * 40) / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("b" * 40)
    return snapshot


def put_in_ollama(home: Path, name: str, tag: str, source: Path) -> Path:
    root = home / ".ollama" / "models"
    sha = file_sha256(source)
    blob = root / "blobs" / f"sha256-{sha}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, blob)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{sha}",
         "size": source.stat().st_size},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
    ]}))
    return blob


def test_import_scan_finds_hf_cache_lmstudio_and_ollama(tmp_path, monkeypatch,
                                                        r1_prefill_model, r1_original_model,
                                                        r1_no_template_model):
    home, hf_home = tmp_path / "home", tmp_path / "hf-home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    snapshot = put_in_hf_cache(hf_home, "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF",
                               "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf", r1_prefill_model)
    studio = home / ".lmstudio" / "models" / "lmstudio-community" / "R1-Distill-GGUF"
    studio.mkdir(parents=True)
    (studio / "R1-Distill-Q6_K.gguf").symlink_to(r1_original_model)
    (studio / "mmproj-R1-f16.gguf").write_bytes(b"a vision projector, not a model")
    (studio / "broken-Q8_0.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    blob = put_in_ollama(home, "deepseek-r1", "7b", r1_no_template_model)

    result = localr1("import", "--scan")
    assert result.exit_code == 0, result.output
    imported = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert set(imported) == {"bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF:Q4_K_M",
                             "lmstudio-community/R1-Distill-GGUF:Q6_K", "deepseek-r1:7b"}
    assert "(hf-cache," in imported["bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF:Q4_K_M"]
    assert "skipped" in result.stderr and "broken-Q8_0.gguf" in result.stderr
    assert "mmproj" not in result.output
    assert result.stderr.splitlines()[-1] == "3 imported, 1 skipped"

    models_dir = app_paths().models_dir
    assert resolve_model("deepseek-r1:7b", models_dir) == blob
    assert resolve_model("bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF:Q4_K_M",
                         models_dir) == snapshot
    registry = ModelRegistry.default()
    assert registry.get("deepseek-r1:7b").sha256 == file_sha256(r1_no_template_model)
    assert not registry.get("deepseek-r1:7b").owned

    again = localr1("import", "--scan")
    assert again.stdout == ""
    assert again.stderr.splitlines()[-1] == "0 imported, 4 skipped"
    assert again.stderr.count("already installed as") == 3

    # `rm` of something another app owns only forgets it.
    assert localr1("rm", "--yes", "deepseek-r1:7b").exit_code == 0 and blob.exists()


def test_run_accepts_an_imported_name(r1_prefill_model):
    assert localr1("import", r1_prefill_model, "--name", "tiny:r1").exit_code == 0
    result = subprocess.run([sys.executable, "-m", "localr1", "run", "-m", "tiny:r1", "hi"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == sm.ANSWER_TEXT + "\n"


# ---- resolution for run ----------------------------------------------------------------------


def test_resolution_of_catalog_hub_and_unknown_names(tmp_path, r1_prefill_model):
    models_dir = app_paths().models_dir
    with pytest.raises(ModelFileError, match=r"^model 'r1:7b-q4_k_m' is not installed; run: "
                                             r"localr1 pull r1:7b$"):
        resolve_model("r1:7b", models_dir)
    with pytest.raises(ModelFileError, match=r"is not installed; run: localr1 pull a/b:Q8_0$"):
        resolve_model("a/b:Q8_0", models_dir)
    with pytest.raises(ModelFileError, match=r"a/b/c\.gguf: no such file \(to download it from "
                                             r"the Hub: localr1 pull a/b/c\.gguf\)"):
        resolve_model("a/b/c.gguf", models_dir)
    with pytest.raises(UnknownModelError, match=r"^unknown model 'r1:7c'; did you mean r1:7b"):
        resolve_model("r1:7c", models_dir)
    # A GGUF dropped into the models folder still works by its file name.
    models_dir.mkdir(parents=True)
    (models_dir / "dropped.gguf").symlink_to(r1_prefill_model)
    assert resolve_model("dropped", models_dir) == models_dir / "dropped.gguf"
    with pytest.raises(UnknownModelError, match="did you mean dropped"):
        resolve_model("droped", models_dir)
    listed = json.loads(localr1("list", "--json").stdout)
    assert [(m["name"], m["source"]) for m in listed] == [("dropped", "folder")]


def test_a_pulled_file_without_its_registry_entry_is_still_found(server):
    assert localr1("pull", "r1").exit_code == 0
    ModelRegistry.default().path.unlink()
    path = app_paths().models_dir / R1_REPO / R1_FILE
    assert resolve_model("r1:1.5b", app_paths().models_dir) == path


def test_a_damaged_registry_is_a_one_line_error(r1_prefill_model):
    registry = ModelRegistry.default()
    registry.path.parent.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"damaged model registry .*fix or delete it"):
        resolve_model("anything", app_paths().models_dir)
    assert resolve_model(str(r1_prefill_model), app_paths().models_dir) == r1_prefill_model


def test_registry_writes_are_atomic_json(r1_prefill_model):
    assert localr1("import", r1_prefill_model, "--name", "a").exit_code == 0
    registry = ModelRegistry.default()
    data = json.loads(registry.path.read_text())
    assert data["version"] == 1 and [m["name"] for m in data["models"]] == ["a"]
    assert not list(registry.path.parent.glob(".models.json.*.tmp"))


# ---- fit -------------------------------------------------------------------------------------


def test_fit_labels():
    shape = fit.ModelShape(4 * GB, 28, 4, 128, 128, 131072)
    kv = 28 * 8192 * 4 * 256 * 2
    gpu = fit.assess(shape, 8192, machine(32, vram_gb=24, gpu=True))
    assert gpu.label == fit.FITS_IN_GPU and gpu.kv_cache_bytes == kv
    assert fit.assess(shape, 8192, machine(32, vram_gb=2, gpu=True)).label == \
        fit.PARTIAL_OFFLOAD
    assert fit.assess(shape, 8192, machine(32, vram_gb=None, gpu=True)).label == \
        fit.PARTIAL_OFFLOAD  # a GPU that cannot tell its free memory
    assert fit.assess(shape, 8192, machine(8)).label == fit.CPU_IN_RAM
    assert fit.assess(shape, 8192, machine(4)).label == fit.TOO_LARGE
    assert fit.assess(shape, 8192, machine(2, vram_gb=2, gpu=True)).label == fit.TOO_LARGE
    # The default context is capped by what the model was trained for.
    small = fit.ModelShape(GB, 28, 4, 128, 128, 4096)
    assert fit.assess(small, 8192, machine(8)).n_ctx == 4096


def test_fit_before_download_uses_the_catalog_metadata():
    entry = load_catalog().get("r1:7b")
    estimate = fit.assess_catalog_entry(entry, 8192, machine(64))
    assert estimate.weights_bytes == entry.size_bytes
    assert estimate.kv_cache_bytes == 28 * 8192 * 4 * (128 + 128) * 2
    assert estimate.kv_known and estimate.label == fit.CPU_IN_RAM
    big = fit.assess_catalog_entry(load_catalog().get("r1:70b-q8_0"), 8192, machine(64))
    assert big.label == fit.TOO_LARGE


def test_machine_memory_reads_this_machine():
    here = fit.machine_memory()
    assert 0 < here.ram_available <= here.ram_total
    assert here.backend


# ---- progress output -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(printer: PullProgressPrinter, clock: FakeClock, seconds: int) -> None:
    printer(FileStarted("model-Q4_K_M.gguf", 1, 2, 100 * 10**6, 0, "download"))
    for _ in range(seconds):
        clock.now += 1
        printer(BytesDone(10**6))
    printer(Notice("connection problem (reset); retrying in 1s (1/5)"))
    clock.now += 1
    printer(FileDone("model-Q4_K_M.gguf", "downloaded"))


def test_progress_is_sparse_plain_lines_when_not_a_terminal():
    stream, clock = io.StringIO(), FakeClock()
    feed(PullProgressPrinter(stream, is_tty=False, clock=clock), clock, 25)
    assert stream.getvalue().splitlines() == [
        "[1/2] model-Q4_K_M.gguf: pulling 100.0 MB",
        "[1/2] model-Q4_K_M.gguf:  10% 10.0 MB/100.0 MB 1.0 MB/s ETA 1m30s",
        "[1/2] model-Q4_K_M.gguf:  20% 20.0 MB/100.0 MB 1.0 MB/s ETA 1m20s",
        "  connection problem (reset); retrying in 1s (1/5)",
        "[1/2] model-Q4_K_M.gguf: downloaded (100.0 MB in 26s, 3.8 MB/s)",
    ]


def test_progress_is_a_bar_with_speed_and_eta_on_a_terminal():
    stream, clock = io.StringIO(), FakeClock()
    feed(PullProgressPrinter(stream, is_tty=True, clock=clock, width=lambda: 100), clock, 3)
    text = stream.getvalue()
    assert "\r\x1b[Kpulling [1/2] model-Q4_K_M.gguf ░░░" in text
    assert "3.0 MB/100.0 MB 1.0 MB/s ETA 1m37s" in text
    assert max(len(line) for line in re.split(r"\r\x1b\[K|\n", text)) < 100
    assert "\r\x1b[K  connection problem (reset); retrying in 1s (1/5)\n\r\x1b[Kpulling" in text
    assert "100% 100.0 MB/100.0 MB" in text
    assert text.endswith("[1/2] model-Q4_K_M.gguf: downloaded (100.0 MB in 4s, 25.0 MB/s)\n")
