"""Public problem sets from a loopback Hub through the real huggingface_hub client and the
models' downloader: first load downloads and names the license, later loads use the cache
with no request at all, drops resume, a wrong sha256 never reaches the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localr1.evaluation.problems import Problem, ProblemSetError
from localr1.evaluation.public_sets import (
    PUBLIC_SETS,
    SETS_FOLDER,
    SOURCE_FILE,
    load_public_set,
    public_set_names,
)
from localr1.models.download_errors import ChecksumMismatchError
from localr1.models.hub_download import DownloadOptions
from localr1.models.hub_resolve import HubError
from localr1.models.pull_events import BytesDone, FileDone, FileStarted, Notice
from tests.hub_server import file_sha256, hub_for_tests

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parquet"
GSM8K_FIXTURE = FIXTURES / "gsm8k_test.parquet"
GSM8K_ROWS = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))["gsm8k_test"]
GSM8K = PUBLIC_SETS["gsm8k"]
MATH500 = PUBLIC_SETS["math-500"]
FAST = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=3)
MATH500_LINES = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{3}$?", "solution": "...",
     "answer": "\\frac{5}{6}", "subject": "Prealgebra", "level": 1,
     "unique_id": "test/prealgebra/1.json"},
    {"problem": "Solve $x^2=4$ for $x>0$.", "solution": "...", "answer": "2",
     "subject": "Algebra", "level": 2, "unique_id": "test/algebra/7.json"},
]


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture()
def math500_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in MATH500_LINES),
                    encoding="utf-8")
    return path


@pytest.fixture()
def hub(monkeypatch, tmp_path, math500_file):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as server:
        server.add_file(GSM8K.repo, GSM8K.path, GSM8K_FIXTURE, repo_type="dataset")
        # Kept in git, not LFS: verified by its git blob id.
        server.add_file(MATH500.repo, MATH500.path, math500_file, repo_type="dataset",
                        lfs=False)
        yield server


def cached_file(data_dir: Path, spec=GSM8K) -> Path:
    return data_dir / SETS_FOLDER / spec.name / spec.path


def commit_of(server, spec=GSM8K) -> str:
    return server.repos[f"datasets/{spec.repo}"].commit


def test_names():
    assert public_set_names() == ("gsm8k", "math-500")


def test_first_load_downloads_and_names_the_license_then_the_cache_is_used(hub, data_dir,
                                                                             monkeypatch):
    events = []
    problem_set = load_public_set("gsm8k", data_dir, events.append)
    commit = commit_of(hub)
    assert problem_set.name == "gsm8k" and problem_set.license == "MIT"
    assert problem_set.source == f"openai/gsm8k@{commit} main/test-00000-of-00001.parquet"
    assert len(problem_set.problems) == len(GSM8K_ROWS)
    first = GSM8K_ROWS[0]
    assert problem_set.problems[0] == Problem("gsm8k-test-0", first["question"], "750")
    assert GSM8K_ROWS[3]["answer"].endswith("#### 3,750")
    assert problem_set.problems[3].answer == "3750"  # the comma goes
    assert [p.id for p in problem_set.problems][-1] == f"gsm8k-test-{len(GSM8K_ROWS) - 1}"
    assert all("," not in p.answer for p in problem_set.problems)
    # The download went through the models' downloader: its events, pinned to the commit.
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == [f"gsm8k: openai/gsm8k at {commit[:12]}, MIT license, 2.1 KB"]
    assert any(isinstance(e, FileStarted) and e.action == "download" for e in events)
    assert sum(e.n_bytes for e in events if isinstance(e, BytesDone)) == \
        GSM8K_FIXTURE.stat().st_size
    assert [e.how for e in events if isinstance(e, FileDone)] == ["downloaded"]
    (get,) = hub.gets()
    assert get.path == f"/datasets/openai/gsm8k/resolve/{commit}/{GSM8K.path}"
    assert cached_file(data_dir).read_bytes() == GSM8K_FIXTURE.read_bytes()
    record = json.loads((data_dir / SETS_FOLDER / "gsm8k" / SOURCE_FILE).read_text())
    assert record == {"name": "gsm8k", "repo": "openai/gsm8k", "revision": "main",
                      "commit": commit, "path": GSM8K.path,
                      "size": GSM8K_FIXTURE.stat().st_size,
                      "sha256": file_sha256(GSM8K_FIXTURE), "license": "MIT"}
    # Later loads: no request at all, even offline and with the Hub gone.
    requests = len(hub.requests)
    again_events = []
    again = load_public_set("gsm8k", data_dir, again_events.append)
    assert again == problem_set and again_events == [] and len(hub.requests) == requests
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_public_set("gsm8k", data_dir) == problem_set


def test_math500_ids_and_a_file_kept_in_git(hub, data_dir):
    problem_set = load_public_set("math-500", data_dir)
    assert problem_set.problems == (
        Problem("test/prealgebra/1.json", MATH500_LINES[0]["problem"], "\\frac{5}{6}"),
        Problem("test/algebra/7.json", MATH500_LINES[1]["problem"], "2"))
    assert problem_set.source == f"HuggingFaceH4/MATH-500@{commit_of(hub, MATH500)} test.jsonl"
    assert problem_set.license == "MIT"


def test_a_dropped_connection_resumes(hub, data_dir):
    hub.drop_after_bytes, hub.drops_left = 700, 1
    events = []
    problem_set = load_public_set("gsm8k", data_dir, events.append, options=FAST)
    assert [g.headers.get("range") for g in hub.gets()] == [None, "bytes=700-"]
    assert any("retrying in" in e.message for e in events if isinstance(e, Notice))
    assert cached_file(data_dir).read_bytes() == GSM8K_FIXTURE.read_bytes()
    assert len(problem_set.problems) == len(GSM8K_ROWS)


def test_a_part_left_by_an_earlier_run_is_continued(hub, data_dir):
    part = cached_file(data_dir).with_name(cached_file(data_dir).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(GSM8K_FIXTURE.read_bytes()[:1000])
    load_public_set("gsm8k", data_dir, options=FAST)
    assert [g.headers.get("range") for g in hub.gets()] == ["bytes=1000-"]
    assert cached_file(data_dir).read_bytes() == GSM8K_FIXTURE.read_bytes()


def test_a_wrong_sha256_is_refused_and_nothing_is_cached(hub, data_dir):
    hub.add_file(GSM8K.repo, GSM8K.path, GSM8K_FIXTURE, sha256="0" * 64, repo_type="dataset")
    with pytest.raises(ChecksumMismatchError, match=r"^test-00000-of-00001\.parquet: "
                                                    r"checksum mismatch \(expected 0000"):
        load_public_set("gsm8k", data_dir, options=FAST)
    folder = cached_file(data_dir).parent
    assert not any(p.is_file() for p in folder.parent.rglob("*"))
    with pytest.raises(ChecksumMismatchError):  # still nothing cached to trust
        load_public_set("gsm8k", data_dir, options=FAST)


def test_a_damaged_cache_is_one_line_and_the_next_run_downloads_again(hub, data_dir):
    load_public_set("gsm8k", data_dir)
    path = cached_file(data_dir)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(ProblemSetError) as error:
        load_public_set("gsm8k", data_dir)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: the cached gsm8k set is "
                                                      "damaged")
    assert message.endswith("run again to download it anew")
    assert len(hub.gets()) == 1
    assert len(load_public_set("gsm8k", data_dir).problems) == len(GSM8K_ROWS)
    assert len(hub.gets()) == 2 and path.read_bytes() == GSM8K_FIXTURE.read_bytes()


def test_hub_errors_are_pulls_one_liners(hub, data_dir, monkeypatch):
    from huggingface_hub import constants

    del hub.repos[f"datasets/{MATH500.repo}"]
    with pytest.raises(HubError, match=r"^repository 'HuggingFaceH4/MATH-500' not found on "
                                       r"http://127\.0\.0\.1:\d+"):
        load_public_set("math-500", data_dir)
    hub.repos[f"datasets/{GSM8K.repo}"].files.clear()
    with pytest.raises(HubError, match=r"^openai/gsm8k has no file "
                                       r"'main/test-00000-of-00001\.parquet' \(revision main\)$"):
        load_public_set("gsm8k", data_dir)
    before = len(hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        load_public_set("gsm8k", data_dir)
    assert len(hub.requests) == before
    assert not cached_file(data_dir).exists()


def test_a_model_repo_of_the_same_name_is_not_the_dataset(hub, data_dir, tmp_path):
    other = tmp_path / "other.parquet"
    other.write_bytes(b"not the dataset")
    hub.add_file(GSM8K.repo, GSM8K.path, other)  # a *model* repo named openai/gsm8k
    assert len(load_public_set("gsm8k", data_dir).problems) == len(GSM8K_ROWS)


def test_a_file_that_is_not_the_sets_format_is_one_line(hub, data_dir, tmp_path):
    bogus = tmp_path / "bogus.parquet"
    bogus.write_bytes(b"PAR1 this is not parquet at all PAR1")
    hub.add_file(GSM8K.repo, GSM8K.path, bogus, repo_type="dataset")
    with pytest.raises(ProblemSetError, match=r"test-00000-of-00001\.parquet: not a readable "
                                              r"Parquet file \(its footer length"):
        load_public_set("gsm8k", data_dir)


def test_unknown_set_names_the_known_ones(data_dir):
    with pytest.raises(ProblemSetError, match=r"^unknown problem set 'gsm9k' \(public sets: "
                                              r"gsm8k, math-500\)$"):
        load_public_set("gsm9k", data_dir)


def test_eval_gsm8k_from_the_command_line_downloads_once_then_works_offline(
        hub, tmp_path, r1_boxed_right_model):
    import subprocess
    import sys

    from tests.hub_server import subprocess_env

    env = subprocess_env(hub, tmp_path / "hf-home")
    args = [sys.executable, "-m", "localr1", "eval", "gsm8k", "-m", str(r1_boxed_right_model),
            "--limit", "2", "--samples", "1", "--max-tokens", "200", "--json"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "license MIT" in first.stderr and f"{GSM8K.repo}@" in first.stderr
    report = json.loads(first.stdout)
    assert report["set"]["problems"] == 2 and report["set"]["license"] == "MIT"
    assert report["set"]["name"] == "gsm8k"
    downloads = len(hub.gets(GSM8K.path))
    assert downloads == 1
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    again = subprocess.run(args, env=offline, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["set"]["digest"] == report["set"]["digest"]
    assert len(hub.gets(GSM8K.path)) == downloads
