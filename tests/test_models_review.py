"""Regression tests for defects a review found in the models and Hub code: each failed before
its fix. Real parts: the loopback Hub (tests/hub_server.py), real files, the real registry."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.errors import ModelFileError
from localr1.models import hub_download, hub_resolve
from localr1.models.catalog import load_catalog
from localr1.models.choice import name_model, record_use
from localr1.models.download_errors import DownloadError, PullInterrupted
from localr1.models.hub_download import DownloadOptions
from localr1.models.hub_resolve import HubError, quant_from_filename, resolve_pull
from localr1.models.library import (
    build_model,
    list_models,
    pull_model,
    remove_model,
    resolve_model,
    validate_gguf,
)
from localr1.models.part_writer import PartWriter
from localr1.models.pull_events import BytesDone, FileDone, FileStarted
from localr1.models.registry import ModelRegistry
from localr1.models.split_names import is_later_part, model_name, part_names, part_paths
from localr1.paths import app_paths
from tests.fixtures.odd_models import write_tiny_model
from tests.hub_server import file_sha256, hub_for_tests

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
FAST = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=3)


@pytest.fixture()
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


@pytest.fixture()
def server(monkeypatch, hf_home, r1_prefill_model):
    with hub_for_tests(monkeypatch, hf_home) as running:
        running.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        yield running


def models_dir() -> Path:
    return app_paths().models_dir


def pulled_path() -> Path:
    return models_dir() / R1_REPO / R1_FILE


def pull(reference="r1", options=FAST, on_event=None):
    plan = resolve_pull(reference, load_catalog())
    return pull_model(plan, models_dir(), on_event=on_event, options=options)


def put_in_hf_cache(hf_home: Path, source: Path) -> Path:
    blob = hf_home / "hub" / ("models--" + R1_REPO.replace("/", "--")) / "blobs" / \
        file_sha256(source)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(source.read_bytes())
    return blob


# ---- 1. the Hugging Face cache is never written through a link ----------------------------------


def test_a_lost_link_race_does_not_truncate_the_hf_cache(server, hf_home, r1_prefill_model,
                                                         monkeypatch):
    blob = put_in_hf_cache(hf_home, r1_prefill_model)
    real_link = os.link

    def link_lost_to_another_pull(source, target):
        real_link(source, target)  # the other pull's link got there first...
        raise FileExistsError(errno.EEXIST, "File exists", str(target))  # ...ours fails

    monkeypatch.setattr(hub_download.os, "link", link_lost_to_another_pull)
    pull()
    assert file_sha256(blob) == file_sha256(r1_prefill_model)
    assert file_sha256(pulled_path()) == file_sha256(r1_prefill_model)


def test_a_cache_copy_uses_a_fresh_file(server, hf_home, r1_prefill_model, monkeypatch):
    put_in_hf_cache(hf_home, r1_prefill_model)
    pulled_path().parent.mkdir(parents=True)
    # What the old fixed temporary name may hold: another pull's link to the blob.
    theirs = pulled_path().with_name(R1_FILE + ".linking")
    theirs.write_bytes(b"not ours to write")

    def cross_device(*_args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(hub_download.os, "link", cross_device)
    events = []
    pull(on_event=events.append)
    assert [e.how for e in events if isinstance(e, FileDone)] == \
        ["copied from the Hugging Face cache"]
    assert file_sha256(pulled_path()) == file_sha256(r1_prefill_model)
    assert theirs.read_bytes() == b"not ours to write"
    assert sorted(p.name for p in pulled_path().parent.iterdir()) == \
        sorted([theirs.name, R1_FILE])


def test_the_cache_step_runs_under_the_part_lock(server, hf_home, r1_prefill_model):
    put_in_hf_cache(hf_home, r1_prefill_model)
    part = pulled_path().with_name(R1_FILE + ".part")
    part.parent.mkdir(parents=True)
    with open(part, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="another localr1 pull is already downloading"):
            pull()
    assert not pulled_path().exists()


# ---- 2. Ctrl+C while a chunk is written does not write it twice --------------------------------


def test_an_interrupt_while_writing_keeps_each_byte_once(server, r1_prefill_model):
    def interrupt_at_first_bytes(event):
        if isinstance(event, BytesDone):
            raise KeyboardInterrupt

    with pytest.raises(PullInterrupted) as interrupted:
        pull(options=FAST, on_event=interrupt_at_first_bytes)
    part = pulled_path().with_name(R1_FILE + ".part")
    kept = part.read_bytes()
    assert kept == r1_prefill_model.read_bytes()[:len(kept)]
    assert interrupted.value.done_bytes == len(kept)
    pull()  # resumes and verifies
    assert file_sha256(pulled_path()) == file_sha256(r1_prefill_model)


# ---- 3. a server whose file is not the size the API said ----------------------------------------


@pytest.mark.parametrize("delta", [1000, -1000])
def test_a_file_of_another_size_than_the_api_said_fails_once(server, r1_prefill_model, delta):
    server.reported_sizes[R1_FILE] = r1_prefill_model.stat().st_size + delta
    starts = []

    def give_up_after_three_starts(event):  # before the fix this pull never ended
        if isinstance(event, FileStarted):
            starts.append(event)
            if len(starts) > 3:
                raise KeyboardInterrupt

    with pytest.raises(DownloadError) as error:
        pull(on_event=give_up_after_three_starts)
    message = str(error.value)
    assert "\n" not in message
    assert f"the server's file has {r1_prefill_model.stat().st_size:,} bytes but the Hub " \
        f"says {r1_prefill_model.stat().st_size + delta:,}" in message
    assert len(server.gets()) == 1


# ---- 4, 11. `rm` deletes only our own files: in the models folder, used by no other record -----


def test_one_file_pulled_under_two_names_is_one_record(server, r1_prefill_model):
    first = pull("r1").model
    again = CliRunner().invoke(cli, ["pull", f"{R1_REPO}:Q4_K_M"])
    assert again.exit_code == 0, again.output
    assert f"{R1_REPO}:Q4_K_M is already installed and verified as {first.name}: " \
        f"{pulled_path()}" in again.output
    assert [m.name for m in ModelRegistry.default().models()] == [first.name]


def test_rm_keeps_a_file_another_record_uses(server, r1_prefill_model):
    pulled = pull("r1").model
    registry = ModelRegistry.default()
    # Two owned records of one file, as an earlier version's two pulls left them.
    registry.put(build_model("twin", tuple(f.path for f in pulled.files), source="pull",
                             owned=True))
    removed = remove_model(registry.get("twin"), models_dir())
    assert removed.deleted == ()
    assert pulled_path().is_file()
    assert [m.name for m in registry.models()] == [pulled.name]


def test_rm_never_deletes_a_file_outside_the_models_folder(tmp_path):
    precious = write_tiny_model(tmp_path / "precious.gguf")
    registry = ModelRegistry.default()
    # A registry whose owned flag was flipped by hand (or by a bug) on a file used in place.
    registry.put(build_model("mine", (precious,), source="import", owned=True))
    removed = remove_model(registry.get("mine"), models_dir())
    assert removed.deleted == ()
    assert precious.is_file()
    assert registry.get("mine") is None


# ---- 5. odd split names are one line, or no split at all ----------------------------------------


def test_a_quant_with_later_parts_only_is_one_line(server, r1_prefill_model):
    server.add_file("odd/X-GGUF", "m-Q4_K_M-00002-of-00002.gguf", r1_prefill_model)
    with pytest.raises(HubError, match=r"^odd/X-GGUF: its Q4_K_M GGUF has later parts only "
                                       r"\(m-Q4_K_M-00002-of-00002.gguf\); the first is missing$"):
        resolve_pull("odd/X-GGUF:Q4_K_M", load_catalog())


@pytest.mark.parametrize("name", ["m-00001-of-00000.gguf", "m-00003-of-00002.gguf",
                                  "m-00000-of-00002.gguf"])
def test_an_impossible_part_number_is_no_split(r1_original_model, name):
    assert part_names(name) == (name,)
    assert not is_later_part(name)
    models_dir().mkdir(parents=True)
    odd = models_dir() / name
    odd.write_bytes(r1_original_model.read_bytes())
    assert [m.path for m in list_models(models_dir())] == [odd]


def test_validating_no_parts_is_a_model_file_error():
    with pytest.raises(ModelFileError):
        validate_gguf(())


def test_one_split_name_reader_everywhere(tmp_path):
    later = tmp_path / "big-Q8_0-00002-of-00003.GGUF"
    assert part_paths(later) == tuple(
        tmp_path / f"big-Q8_0-0000{i}-of-00003.GGUF" for i in (1, 2, 3))
    assert model_name(later) == "big-Q8_0"
    assert model_name(tmp_path / "-00001-of-00002.gguf") == "-00001-of-00002"
    assert quant_from_filename("big-Q8_0-00002-of-00003.gguf") == "Q8_0"


# ---- 7, 8. a file used by path gets a name that works and shadows nothing ----------------------


def remember(path: Path) -> str:
    return record_use(name_model(path, models_dir()), models_dir(), remember=True).name


def test_a_file_name_with_spaces_is_remembered_with_dashes(tmp_path):
    model = write_tiny_model(tmp_path / "my  model.gguf")
    assert remember(model) == "my-model"
    assert resolve_model("my-model", models_dir()) == model


@pytest.mark.parametrize("stem", ["r1", "R1:7B", "r1:1.5b"])
def test_a_file_used_by_path_does_not_take_a_catalog_name(tmp_path, stem):
    assert load_catalog().find(stem) is not None
    model = write_tiny_model(tmp_path / f"{stem}.gguf")
    assert remember(model) == f"{stem}-2"
    with pytest.raises(ModelFileError, match="is not installed; run: localr1 pull"):
        resolve_model(stem, models_dir())


# ---- 6, 9. HTTP failures are one line, and say which limit was hit ------------------------------


def test_an_undecodable_api_answer_is_one_line(server):
    server.bad_gzip_api = True
    with pytest.raises(HubError, match=f"^the Hub's answer for {R1_REPO} could not be decoded"):
        resolve_pull(f"{R1_REPO}:Q4_K_M", load_catalog())


def test_a_redirect_loop_is_one_line(server):
    server.files_redirect_to = server.url  # every file GET answers 302 to itself
    with pytest.raises(HubError, match=f"^the Hub sent too many redirects for {R1_REPO}/"):
        pull()


def test_a_read_timeout_is_not_reported_as_the_deadline(server, monkeypatch):
    monkeypatch.setattr(hub_resolve, "REQUEST_READ_TIMEOUT", 0.3)
    server.trickle_api_interval_s = 30  # the first byte, then nothing
    with pytest.raises(HubError) as error:
        resolve_pull(f"{R1_REPO}:Q4_K_M", load_catalog())
    assert str(error.value) == f"the Hub at {server.url} stopped answering about {R1_REPO} " \
        "(nothing for 0.3 s); try again later"


# ---- smaller: the .part lock survives a start-over; a dead hash thread cannot hang finish() ----


def test_a_too_large_part_is_emptied_under_its_lock(server, r1_prefill_model):
    part = pulled_path().with_name(R1_FILE + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (r1_prefill_model.stat().st_size + 10))
    second_pull_refused = []

    def try_a_second_pull(event):
        if isinstance(event, FileStarted):  # the first pull has just started over
            with open(part, "ab") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    second_pull_refused.append(True)

    pull(on_event=try_a_second_pull)
    assert second_pull_refused == [True]
    assert file_sha256(pulled_path()) == file_sha256(r1_prefill_model)


class _BrokenDigest:
    def update(self, _block: bytes) -> None:
        raise ValueError("the hash broke")


def test_finish_reports_a_dead_hash_thread_with_a_full_queue(tmp_path):
    writer = PartWriter(tmp_path / "x.part", 0, [_BrokenDigest()])
    for _ in range(65):  # the first kills the thread; 64 more fill the queue
        writer.write(b"z")
    finished = []
    waiter = threading.Thread(target=lambda: finished.append(_outcome(writer.finish)),
                              daemon=True)
    waiter.start()
    waiter.join(timeout=30)  # a guard only: before the fix finish() never returned
    writer.close()
    assert finished == ["ValueError: the hash broke"]


def _outcome(call) -> str:
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "returned"


def test_a_server_that_keeps_misplacing_ranges_is_given_up_on(server):
    server.drop_after_bytes, server.drops_left = 1 << 20, 1000  # every GET drops after 1 MB
    server.misplaced_ranges = True  # and every resume answers for another offset
    starts = []

    def give_up_after_ten_starts(event):  # before the fix this pull never ended
        if isinstance(event, FileStarted):
            starts.append(event)
            if len(starts) > 10:
                raise KeyboardInterrupt

    with pytest.raises(DownloadError, match="the server keeps disagreeing about the file's "
                                            "size"):
        pull(on_event=give_up_after_ten_starts)
