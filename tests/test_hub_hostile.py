"""A Hub that lies or stalls on purpose (tests/hub_server.py's hostile knobs), and a models folder
that cannot be written: every case is one clean line and exit 1, nothing is written outside the
models folder, and nothing is left behind by a download that fails validation."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.models.catalog import load_catalog
from localr1.models.download_errors import DownloadError
from localr1.models.hub_download import DownloadOptions
from localr1.models.hub_resolve import resolve_pull
from localr1.models.library import pull_model
from localr1.models.registry import ModelRegistry
from localr1.paths import app_paths
from tests.hub_server import hub_for_tests

EVIL = "evil/R1-GGUF"
TRAVERSAL = "../../../../elsewhere/important-Q4_K_M.gguf"
R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
FAST = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=2)


@pytest.fixture()
def server(monkeypatch, tmp_path, r1_prefill_model):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as running:
        running.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        yield running


def localr1(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_failure(result, text: str) -> str:
    """Exit 1 through our own error (not a crash), and the last line says `text`."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and text in last, result.stderr
    assert "\0" not in result.stderr and "Traceback" not in result.output
    return last


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def outside_models(tmp_path: Path) -> set[Path]:
    models = app_paths().models_dir.resolve()
    return {p for p in files_under(tmp_path) if models not in p.resolve().parents}


# ---- names ---------------------------------------------------------------------------------


def test_a_traversal_name_writes_nothing_outside_the_models_folder(server, tmp_path,
                                                                   r1_prefill_model):
    server.add_file(EVIL, TRAVERSAL, r1_prefill_model)
    base = app_paths().models_dir / EVIL
    victim = (base / TRAVERSAL).resolve()
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"an important file")
    before = outside_models(tmp_path)
    for reference in (f"{EVIL}:Q4_K_M", f"{EVIL}/{TRAVERSAL}"):
        result = localr1("pull", reference)
        assert_one_line_failure(result, f"{EVIL} names an unsafe file "
                                        "'../../../../elsewhere/important-Q4_K_M.gguf' "
                                        "(it has a '..' part); refusing to download it")
    assert victim.read_bytes() == b"an important file"
    assert outside_models(tmp_path) == before
    assert server.gets() == []


def test_a_link_in_the_models_folder_does_not_lead_a_pull_elsewhere(server, tmp_path,
                                                                    r1_prefill_model):
    server.add_file(EVIL, "R1-Q4_K_M.gguf", r1_prefill_model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    app_paths().models_dir.mkdir(parents=True)
    (app_paths().models_dir / "evil").symlink_to(elsewhere, target_is_directory=True)
    result = localr1("pull", f"{EVIL}:Q4_K_M")
    assert_one_line_failure(result, f"refusing file name from {EVIL} '{EVIL}/R1-Q4_K_M.gguf': "
                                    f"it leads outside {app_paths().models_dir}")
    assert list(elsewhere.iterdir()) == [] and server.gets() == []


@pytest.mark.parametrize(("name", "shown", "why"), [
    ("bad\0name-Q4_K_M.gguf", "bad\\x00name-Q4_K_M.gguf", "it contains a NUL character"),
    ("x" * 292 + "-Q4_K_M.gguf", "x" * 79, "a part is longer than this filesystem allows"),
    ("sub\\dir-Q4_K_M.gguf", "sub\\dir-Q4_K_M.gguf", "it contains a backslash"),
    ("bell\a-Q4_K_M.gguf", "bell\\x07-Q4_K_M.gguf", "it contains a control character"),
])
def test_names_that_cannot_be_files_here_are_refused(server, r1_prefill_model, name, shown,
                                                     why):
    server.add_file(EVIL, name, r1_prefill_model)
    result = localr1("pull", f"{EVIL}:Q4_K_M")
    last = assert_one_line_failure(result, why)
    assert f"{EVIL} names an unsafe file '{shown}" in last
    assert not (app_paths().models_dir / "evil").exists()
    assert server.gets() == []


# ---- what the API says -------------------------------------------------------------------


@pytest.mark.parametrize("size", [-5, "lots", None, True])
def test_a_bad_size_from_the_api_is_one_line(server, size):
    server.reported_sizes[R1_FILE] = size
    result = localr1("pull", "r1")
    assert_one_line_failure(result, f"the Hub gave an invalid size for {R1_REPO}/{R1_FILE}: ")
    assert server.gets() == []


def test_a_trickling_api_meets_the_deadline(server, monkeypatch):
    monkeypatch.setenv("LOCALR1_HUB_TIMEOUT", "0.5")
    server.trickle_api_interval_s = 0.05  # a 250-byte answer would take 12 s
    began = time.monotonic()
    result = localr1("pull", f"{R1_REPO}:Q4_K_M")
    assert_one_line_failure(result, "did not answer within 0.5 s (set LOCALR1_HUB_TIMEOUT to "
                                    "wait longer)")
    assert time.monotonic() - began < 5


def test_a_silent_api_meets_the_deadline(server, monkeypatch):
    monkeypatch.setenv("LOCALR1_HUB_TIMEOUT", "0.5")
    server.trickle_api_interval_s = 30  # the first byte, then nothing
    began = time.monotonic()
    assert_one_line_failure(localr1("pull", "r1"), "did not answer within 0.5 s")
    assert time.monotonic() - began < 5


def test_endless_pagination_stops_at_the_page_cap(server):
    server.endless_pages = True
    result = localr1("pull", f"{R1_REPO}:Q4_K_M")
    assert_one_line_failure(result, f"the Hub's file list for {R1_REPO} goes on for more than "
                                    "50 pages; refusing it")
    assert len([r for r in server.requests if "/tree/" in r.path]) == 50


def test_a_next_page_on_another_site_is_not_followed(server):
    server.endless_pages, server.page_link_origin = True, "http://127.0.0.2:9"
    result = localr1("pull", f"{R1_REPO}:Q4_K_M")
    assert_one_line_failure(result, f"the Hub's file list for {R1_REPO} links to another site")
    assert len([r for r in server.requests if "/tree/" in r.path]) == 1


def test_a_bad_timeout_setting_is_one_line(server, monkeypatch):
    monkeypatch.setenv("LOCALR1_HUB_TIMEOUT", "soon")
    assert_one_line_failure(localr1("pull", "r1"), "LOCALR1_HUB_TIMEOUT='soon' is not a number")


# ---- the download ------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0.05, 1.0], ids=["trickle", "silence"])
def test_a_stalled_download_keeps_the_part_for_a_resume(server, interval, r1_prefill_model):
    server.trickle_file_interval_s = interval
    plan = resolve_pull("r1", load_catalog())
    stalled = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=2,
                              read_timeout=0.3)
    with pytest.raises(DownloadError) as error:
        pull_model(plan, app_paths().models_dir, options=stalled)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{R1_FILE}: download failed after 2 retries (connection "
                              "stalled: no progress for 0.3 s); kept ")
    part = app_paths().models_dir / R1_REPO / (R1_FILE + ".part")
    kept = part.stat().st_size
    assert 0 < kept < 1000
    server.trickle_file_interval_s = None
    pull_model(plan, app_paths().models_dir, options=FAST)
    assert server.gets()[-1].headers["range"] == f"bytes={kept}-"
    assert (part.parent / R1_FILE).read_bytes() == r1_prefill_model.read_bytes()


def test_a_download_that_is_no_gguf_is_deleted(server, tmp_path):
    impostor = tmp_path / "impostor.gguf"
    impostor.write_bytes(b"<html>not a model</html>" * 1000)
    server.add_file(EVIL, "R1-Q4_K_M.gguf", impostor)  # its sha256 matches: only the header fails
    result = localr1("pull", f"{EVIL}:Q4_K_M")
    assert_one_line_failure(result, "; the download was deleted")
    assert files_under(app_paths().models_dir) == set()
    assert not (app_paths().models_dir / "evil").exists()
    assert ModelRegistry.default().models() == []


# ---- a read-only models folder -----------------------------------------------------------


@pytest.fixture()
def read_only_models(tmp_path, monkeypatch):
    """A models folder nothing can be written to: a read-only tmpfs (root ignores modes)."""
    folder = tmp_path / "read-only-models"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        folder.chmod(0o555)
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("cannot make a read-only folder here (root without mount)")
    monkeypatch.setenv("LOCALR1_MODELS", str(folder))
    yield folder
    if mounted.returncode == 0:
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o755)


def test_pull_into_a_read_only_models_folder(server, read_only_models):
    result = localr1("pull", "r1")
    assert_one_line_failure(result, f"models folder {read_only_models} is read-only")
    assert server.gets() == []


def test_import_copy_into_a_read_only_models_folder(read_only_models, r1_prefill_model):
    result = localr1("import", r1_prefill_model, "--copy", "--name", "mine")
    assert_one_line_failure(result, f"models folder {read_only_models} is read-only")
    assert ModelRegistry.default().models() == []


# ---- other apps' folders -----------------------------------------------------------------


def test_scan_passes_over_what_leads_out_of_other_apps_folders(tmp_path, monkeypatch,
                                                               r1_prefill_model):
    home, hf_home = tmp_path / "home", tmp_path / "hf-home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    # Ollama: a manifest whose "digest" walks out of the blob store to a GGUF elsewhere.
    ollama = home / ".ollama" / "models"
    (ollama / "blobs" / "sha256-x").mkdir(parents=True)
    (home / ".ollama" / "secret.gguf").write_bytes(r1_prefill_model.read_bytes())
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "evil" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"layers": [{"mediaType": "application/vnd.ollama.image.model", '
                        '"digest": "sha256:x/../../../secret.gguf"}]}')
    # The Hugging Face cache: a snapshot that links outside the cache.
    snapshot = hf_home / "hub" / "models--evil--R1-GGUF" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "R1-Q4_K_M.gguf").symlink_to(r1_prefill_model)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("c" * 40)
    # LM Studio: a name that would put a control character on the terminal.
    studio = home / ".lmstudio" / "models" / "evil" / "R1-GGUF"
    studio.mkdir(parents=True)
    (studio / "bell\a-Q4_K_M.gguf").symlink_to(r1_prefill_model)

    result = localr1("import", "--scan")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.splitlines()[-1] == "0 imported, 0 skipped"
    assert ModelRegistry.default().models() == []
