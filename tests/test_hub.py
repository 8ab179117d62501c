"""Pulling from a loopback Hub through the real huggingface_hub client: resolution, resume,
retries, verification, split files, disk space, the Hugging Face cache."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from localr1.models import hub_download, hub_resolve
from localr1.models.catalog import load_catalog
from localr1.models.download_errors import (
    ChecksumMismatchError,
    DownloadError,
    NotEnoughSpaceError,
    PullInterrupted,
)
from localr1.models.hub_download import DownloadOptions
from localr1.models.hub_resolve import (
    HubError,
    parse_hub_reference,
    quant_from_filename,
    resolve_pull,
)
from localr1.models.library import pull_model, resolve_model
from localr1.models.pull_events import BytesDone, FileDone, Notice
from localr1.models.registry import ModelRegistry
from localr1.models.split_names import part_names
from localr1.paths import app_paths
from tests.hub_server import TEST_TOKEN, file_sha256, hub_for_tests, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
FAST = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=3)
MB = 1 << 20


@pytest.fixture()
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


@pytest.fixture()
def server(monkeypatch, hf_home, r1_prefill_model):
    with hub_for_tests(monkeypatch, hf_home) as running:
        running.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        yield running


@pytest.fixture()
def catalog():
    return load_catalog()


def models_dir() -> Path:
    return app_paths().models_dir


def pulled_path() -> Path:
    return models_dir() / R1_REPO / R1_FILE


def pull(catalog, reference="r1", options=FAST, events=None, cancel=None):
    plan = resolve_pull(reference, catalog)
    return pull_model(plan, models_dir(), on_event=events.append if events is not None else None,
                      options=options, cancel=cancel)


# ---- names -----------------------------------------------------------------------------------


def test_reference_forms():
    reference = hub_resolve.HubReference
    assert parse_hub_reference("bartowski/X-GGUF:q6_k") == reference("bartowski/X-GGUF",
                                                                      "Q6_K", None)
    assert parse_hub_reference("hf.co/a/b/sub/f.gguf") == reference("a/b", None, "sub/f.gguf")
    assert parse_hub_reference("a/b") == reference("a/b", None, None)
    for not_hub in ("r1:7b", "tiny", "/abs/path.gguf", "a/b:", "a/b/c"):
        assert parse_hub_reference(not_hub) is None, not_hub
    assert quant_from_filename("DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_from_filename("d/X-Q8_0-00002-of-00003.gguf") == "Q8_0"
    assert quant_from_filename("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_from_filename("model.gguf") is None
    assert part_names("d/X-00002-of-00003.gguf") == tuple(
        f"d/X-0000{i}-of-00003.gguf" for i in (1, 2, 3))


# ---- the happy path --------------------------------------------------------------------------


def test_full_pull_is_verified_registered_and_runnable(server, catalog, r1_prefill_model):
    events = []
    result = pull(catalog, events=events)
    path = pulled_path()
    assert result.model.path == path and not result.already_installed
    assert path.read_bytes() == r1_prefill_model.read_bytes()
    assert not path.with_name(path.name + ".part").exists()
    assert result.model.sha256 == file_sha256(r1_prefill_model)
    assert result.model.catalog_name == "r1:1.5b-q4_k_m" and result.model.owned
    assert ModelRegistry.default().get("r1:1.5b-q4_k_m").files[0].still_verified()
    assert [e.how for e in events if isinstance(e, FileDone)] == ["downloaded"]
    # The Hub saw a paths-info call and one plain GET, with the user's token.
    posts = [r for r in server.requests if r.method == "POST"]
    assert posts and posts[0].path == f"/api/models/{R1_REPO}/paths-info/main"
    (get,) = server.gets()
    assert get.headers.get("authorization") == f"Bearer {TEST_TOKEN}"
    assert "range" not in get.headers
    # run accepts the catalog name, its alias and the canonical name from now on.
    for name in ("r1", "r1:1.5b", "r1:1.5b-q4_k_m", f"{R1_REPO}:Q4_K_M"):
        assert resolve_model(name, models_dir()) == path


def test_an_installed_verified_model_is_not_downloaded_again(server, catalog):
    pull(catalog)
    again = pull(catalog)
    assert again.already_installed and len(server.gets()) == 1
    # Lost registry, file still there: it is hashed, not downloaded.
    ModelRegistry.default().path.unlink()
    events = []
    third = pull(catalog, events=events)
    assert not third.already_installed and len(server.gets()) == 1
    assert [e.how for e in events if isinstance(e, FileDone)] == ["already downloaded"]


def test_repo_and_quant_and_repo_and_file(server, catalog):
    plan = resolve_pull(f"{R1_REPO}:q4_k_m", catalog)
    assert plan.name == f"{R1_REPO}:Q4_K_M" and plan.files[0].path == R1_FILE
    assert resolve_pull(R1_REPO, catalog).quant == "Q4_K_M"  # the default quant
    plan = resolve_pull(f"{R1_REPO}/{R1_FILE}", catalog)
    assert plan.files[0].size == plan.size_bytes > 40 * MB
    with pytest.raises(HubError, match=r"has no Q6_K GGUF \(available: Q4_K_M\)"):
        resolve_pull(f"{R1_REPO}:Q6_K", catalog)


# ---- failures the Hub reports ----------------------------------------------------------------


def test_unknown_repo_file_and_revision(server, catalog):
    with pytest.raises(HubError, match=r"^repository 'nobody/nothing-GGUF' not found on "
                                       r"http://127\.0\.0\.1:\d+ \(if it is private"):
        resolve_pull("nobody/nothing-GGUF:Q4_K_M", catalog)
    with pytest.raises(HubError, match=rf"^{R1_REPO} has no file 'missing\.gguf' \(revision "
                                       r"main\)$"):
        resolve_pull(f"{R1_REPO}/missing.gguf", catalog)
    with pytest.raises(HubError, match=rf"^{R1_REPO} has no revision 'v9'$"):
        hub_resolve.remote_files(R1_REPO, (R1_FILE,), revision="v9")
    with pytest.raises(HubError, match="^repository 'bartowski/DeepSeek-R1-Distill-Qwen-7B"):
        resolve_pull("r1:7b", catalog)  # a catalog entry this Hub does not have


def test_offline_mode_is_respected(server, catalog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        resolve_pull("r1", catalog)
    assert server.requests == []


# ---- resume and retry ------------------------------------------------------------------------


def test_resumes_after_the_server_drops_the_connection(server, catalog, r1_prefill_model):
    server.drop_after_bytes, server.drops_left = 10 * MB, 2
    events = []
    pull(catalog, events=events)
    assert pulled_path().read_bytes() == r1_prefill_model.read_bytes()
    ranges = [g.headers.get("range") for g in server.gets()]
    assert ranges == [None, f"bytes={10 * MB}-", f"bytes={20 * MB}-"]
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 2 and all("retrying in" in n for n in notices)


def test_gives_up_after_retries_then_a_new_pull_resumes(server, catalog, r1_prefill_model):
    # The first request gets 3 MB, then every retry gets nothing at all.
    server.drop_after_bytes, server.drops_left = 3 * MB, 1
    original = server.take_drop
    calls = []

    def drop_everything_after_the_first():
        calls.append(1)
        return original() if len(calls) == 1 else 0

    server.take_drop = drop_everything_after_the_first
    with pytest.raises(DownloadError) as error:
        pull(catalog)
    message = str(error.value)
    assert "\n" not in message and "after 3 retries" in message and "pull again" in message
    part = pulled_path().with_name(R1_FILE + ".part")
    assert part.stat().st_size == 3 * MB
    server.take_drop = original
    pull(catalog)
    assert server.gets()[-1].headers["range"] == f"bytes={3 * MB}-"
    assert pulled_path().read_bytes() == r1_prefill_model.read_bytes()


def test_resume_rehashes_the_bytes_already_on_disk(server, catalog, r1_prefill_model):
    data = r1_prefill_model.read_bytes()
    part = pulled_path().with_name(R1_FILE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 7 * MB])
    pull(catalog)
    assert server.gets()[0].headers["range"] == f"bytes={7 * MB}-"
    assert pulled_path().read_bytes() == data
    # A damaged prefix is caught by the final check, even though only the tail was fetched.
    ModelRegistry.default().remove("r1:1.5b-q4_k_m")
    pulled_path().unlink()
    part.write_bytes(b"\0" * (7 * MB))
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        pull(catalog)
    assert not part.exists() and not pulled_path().exists()


def test_a_server_that_ignores_range_restarts_cleanly(server, catalog, r1_prefill_model):
    server.ignore_range = True
    part = pulled_path().with_name(R1_FILE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 100_000)  # would corrupt the file if it were continued
    events = []
    pull(catalog, events=events)
    assert server.gets()[0].headers["range"] == "bytes=700000-"
    assert len(server.gets()) == 1  # the 200 body itself was used, not requested again
    assert pulled_path().read_bytes() == r1_prefill_model.read_bytes()
    assert any("ignored the resume request" in e.message for e in events
               if isinstance(e, Notice))


def test_checksum_mismatch_deletes_the_file(server, catalog):
    server.corrupt_paths.add(R1_FILE)
    with pytest.raises(ChecksumMismatchError) as error:
        pull(catalog)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{R1_FILE}: checksum mismatch (expected ")
    assert "the download was deleted" in message
    assert not pulled_path().exists()
    assert not pulled_path().with_name(R1_FILE + ".part").exists()
    assert ModelRegistry.default().models() == []


def test_cancel_keeps_the_part_and_says_so(server, catalog):
    cancel = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, BytesDone) and len(seen) > 5:
            cancel.set()

    plan = resolve_pull("r1", catalog)
    with pytest.raises(PullInterrupted) as error:
        pull_model(plan, models_dir(), on_event=on_event, options=FAST, cancel=cancel)
    part = pulled_path().with_name(R1_FILE + ".part")
    assert part.stat().st_size == error.value.done_bytes > 0
    assert "pull again to resume" in str(error.value)


PULL_IN_A_CHILD = [sys.executable, "-m", "localr1", "pull"]


def test_resumes_after_kill_9_of_a_pull_process(server, catalog, hf_home, r1_prefill_model,
                                                 monkeypatch):
    server.throttle_bytes_per_s = 4 * MB
    env = subprocess_env(server, hf_home)
    child = subprocess.Popen([*PULL_IN_A_CHILD, "r1"], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    part = pulled_path().with_name(R1_FILE + ".part")
    deadline = time.monotonic() + 30
    try:
        while not (part.exists() and part.stat().st_size >= 3 * MB):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never started downloading"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    kept = part.stat().st_size
    assert 3 * MB <= kept < r1_prefill_model.stat().st_size
    server.throttle_bytes_per_s = None
    pull(catalog)
    assert server.gets()[-1].headers["range"] == f"bytes={kept}-"
    assert pulled_path().read_bytes() == r1_prefill_model.read_bytes()


# ---- split files, disk space, the Hugging Face cache -----------------------------------------


def write_split_gguf(folder: Path, stem: str) -> list[Path]:
    """A valid two-part GGUF (`stem-00001-of-00002.gguf`, ...)."""
    writer = gguf.GGUFWriter(folder / f"{stem}.gguf", "llama", split_max_tensors=2)
    writer.add_name("split test")
    writer.add_block_count(1)
    writer.add_context_length(256)
    for i in range(4):
        writer.add_tensor(f"t{i}", np.full((256, 256), i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(folder.glob(f"{stem}-*-of-00002.gguf"))


def test_split_gguf_pulls_every_part(server, catalog, tmp_path):
    entry = catalog.get("r1:70b-q8_0")
    stem = "DeepSeek-R1-Distill-Llama-70B-Q8_0"
    parts = write_split_gguf(tmp_path, stem)
    for part, path_in_repo in zip(parts, entry.files, strict=True):
        assert path_in_repo.endswith(part.name)
        server.add_file(entry.repo, path_in_repo, part)
    result = pull(catalog, "r1:70b-q8_0")
    assert [f.path.name for f in result.model.files] == [p.name for p in parts]
    for f, part in zip(result.model.files, parts, strict=True):
        assert f.path.read_bytes() == part.read_bytes() and f.sha256 == file_sha256(part)
    assert resolve_model("r1:70b-q8_0", models_dir()) == result.model.files[0].path
    # The same parts by repo and quant, and by the name of any one part.
    assert [f.path for f in resolve_pull(f"{entry.repo}:Q8_0", catalog).files] == \
        list(entry.files)
    by_file = resolve_pull(f"{entry.repo}/{entry.files[1]}", catalog)
    assert [f.path for f in by_file.files] == list(entry.files)


def test_no_space_left_is_one_line_before_any_download(server, catalog, monkeypatch):
    monkeypatch.setenv("LOCALR1_TEST_FREE_BYTES", str(30 * MB))
    with pytest.raises(NotEnoughSpaceError) as error:
        pull(catalog)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no space left for r1:1.5b-q4_k_m: it "
                                                      "needs 45.0 MB plus a 50.0 MB margin")
    assert server.gets() == []


def put_in_hf_cache(hf_home: Path, repo: str, filename: str, source: Path) -> Path:
    """A file as hf_hub_download leaves it: blobs/<sha256> plus a snapshot symlink."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    blob = folder / "blobs" / file_sha256(source)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(source.read_bytes())
    snapshot = folder / "snapshots" / ("a" * 40) / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("a" * 40)
    return blob


def test_a_file_in_the_hf_cache_is_linked_not_downloaded(server, catalog, hf_home,
                                                          r1_prefill_model):
    blob = put_in_hf_cache(hf_home, "someone/else-GGUF", "other-name.gguf", r1_prefill_model)
    events = []
    result = pull(catalog, events=events)
    assert server.gets() == []
    assert result.model.path.stat().st_ino == blob.stat().st_ino  # a hard link: no space used
    assert [e.how for e in events if isinstance(e, FileDone)] == \
        ["linked from the Hugging Face cache"]


def test_hf_cache_copy_when_links_fail(server, catalog, hf_home, r1_prefill_model,
                                       monkeypatch):
    put_in_hf_cache(hf_home, R1_REPO, R1_FILE, r1_prefill_model)

    def no_links(*_args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(hub_download.os, "link", no_links)
    events = []
    result = pull(catalog, events=events)
    assert server.gets() == []
    assert result.model.path.read_bytes() == r1_prefill_model.read_bytes()
    assert [e.how for e in events if isinstance(e, FileDone)] == \
        ["copied from the Hugging Face cache"]


def test_a_damaged_hf_cache_blob_is_not_trusted(server, catalog, hf_home, r1_prefill_model):
    blob = put_in_hf_cache(hf_home, R1_REPO, R1_FILE, r1_prefill_model)
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    pull(catalog)
    assert len(server.gets()) == 1
    assert hashlib.sha256(pulled_path().read_bytes()).hexdigest() == \
        file_sha256(r1_prefill_model)


def test_two_pulls_of_one_file_do_not_share_the_part(server, catalog):
    import fcntl

    part = pulled_path().with_name(R1_FILE + ".part")
    part.parent.mkdir(parents=True)
    with open(part, "ab") as other_pull:
        fcntl.flock(other_pull, fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another localr1 pull is already downloading"):
            pull(catalog)
    assert server.gets() == []
    pull(catalog)
    assert pulled_path().is_file()


def test_a_file_kept_in_git_is_verified_by_its_blob_id(server, catalog, tmp_path):
    small = tmp_path / "tiny-Q8_0.gguf"
    small.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    server.add_file("someone/small-GGUF", "tiny-Q8_0.gguf", small, lfs=False)
    plan = resolve_pull("someone/small-GGUF:Q8_0", catalog)
    assert plan.files[0].sha256 is None
    (done,) = hub_download.download(plan, models_dir(), options=FAST)
    assert done.path.read_bytes() == small.read_bytes()
    assert done.sha256 == file_sha256(small)
    server.corrupt_paths.add("tiny-Q8_0.gguf")
    done.path.unlink()
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        hub_download.download(plan, models_dir(), options=FAST)


@pytest.fixture()
def tiny_disk(tmp_path):
    """A real 30 MB filesystem (tmpfs), where this machine lets us mount one."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs",
                              str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?); LOCALR1_TEST_FREE_BYTES covers it")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_really_full_disk(server, catalog, tiny_disk, monkeypatch):
    monkeypatch.setenv("LOCALR1_MODELS", str(tiny_disk))
    with pytest.raises(NotEnoughSpaceError, match=r"needs 45\.0 MB plus a 50\.0 MB margin, "
                                                  r"but .* has 31\.5 MB free$"):
        pull(catalog)
    assert server.gets() == []
    # The disk fills up while downloading (say another program wrote to it): ENOSPC.
    monkeypatch.setenv("LOCALR1_TEST_FREE_BYTES", str(10**12))
    with pytest.raises(NotEnoughSpaceError) as error:
        pull(catalog)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no space left on the disk while writing")
    assert message.endswith("pull again to resume (the partial file is kept)")
    part = tiny_disk / R1_REPO / (R1_FILE + ".part")
    assert part.stat().st_size > 20 * MB
