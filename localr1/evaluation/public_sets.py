"""Named public problem sets (`localr1 eval gsm8k`), downloaded once from the Hugging Face Hub
and read from the cache from then on, with no network at all.

The download is the models' own (hub_resolve.remote_files, hub_download.download_file): the
endpoint from HF_ENDPOINT, a `.part` resumed after a drop, the Hub's sha256 (or git blob id)
checked before the file is kept, names checked by safe_paths, progress as pull_events. The
revision is pinned to the commit `main` points at, and a small `source.json` beside the file
records the repo, that commit, the sha256 and the license, so results name exactly what was
asked and a damaged cache is caught before a single problem is read.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localr1.evaluation.parquet_reader import ParquetError, read_rows
from localr1.evaluation.problems import Problem, ProblemSet, ProblemSetError, make_problem_set
from localr1.models.hub_download import download_file
from localr1.models.hub_resolve import (
    REQUEST_READ_TIMEOUT,
    Deadline,
    HubError,
    hub_endpoint,
    hub_error,
    remote_files,
)
from localr1.models.hub_transfer import DownloadOptions
from localr1.models.part_writer import file_sha256
from localr1.models.pull_events import Notice, OnEvent, ignore_event
from localr1.models.safe_paths import join_inside, shown_name
from localr1.sizes import format_bytes
from localr1.whole_file import replace_text

SETS_FOLDER = "eval-sets"  # under the data folder
SOURCE_FILE = "source.json"
MAX_SET_BYTES = 64 << 20  # GSM8K's test split is 0.4 MB, MATH-500's 0.4 MB
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PublicSet:
    name: str
    repo: str  # a dataset repo on the Hub
    path: str  # the file in it
    license: str
    convert: Callable[[Path], list[Problem]]  # the downloaded file to problems
    revision: str = "main"


def gsm8k_problems(path: Path) -> list[Problem]:
    """openai/gsm8k: `question`, and an `answer` whose final line is `#### 1,234`."""
    problems = []
    for index, row in enumerate(read_rows(path, ("question", "answer"))):
        question, solution = row["question"], row["answer"]
        if not isinstance(question, str) or not isinstance(solution, str) \
                or "####" not in solution:
            raise ProblemSetError(f"{path}: row {index} has no question or no '#### answer'")
        answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
        problems.append(Problem(f"gsm8k-test-{index}", question, answer))
    return problems


def math500_problems(path: Path) -> list[Problem]:
    """HuggingFaceH4/MATH-500: JSON lines with `problem`, `answer` and `unique_id`."""
    problems = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemSetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            fields = [data.get(key) if isinstance(data, dict) else None
                      for key in ("unique_id", "problem", "answer")]
            if not all(isinstance(field, str) for field in fields):
                raise ProblemSetError(f"{path}:{number}: needs string fields unique_id, "
                                      "problem and answer")
            problems.append(Problem(*fields))
    return problems


PUBLIC_SETS: dict[str, PublicSet] = {s.name: s for s in (
    PublicSet("gsm8k", "openai/gsm8k", "main/test-00000-of-00001.parquet", "MIT",
              gsm8k_problems),
    PublicSet("math-500", "HuggingFaceH4/MATH-500", "test.jsonl", "MIT", math500_problems),
)}


def public_set_names() -> tuple[str, ...]:
    return tuple(PUBLIC_SETS)


def load_public_set(name: str, data_dir: Path, on_event: OnEvent = ignore_event,
                    options: DownloadOptions | None = None,
                    cancel: threading.Event | None = None) -> ProblemSet:
    """The set from `<data_dir>/eval-sets/<name>/`, downloaded first if it is not there."""
    spec = PUBLIC_SETS.get(name)
    if spec is None:
        raise ProblemSetError(f"unknown problem set '{shown_name(name)}' (public sets: "
                              f"{', '.join(PUBLIC_SETS)})")
    folder = Path(data_dir) / SETS_FOLDER / spec.name
    path = join_inside(folder, spec.path, what=f"file name from {spec.repo}")
    source = _cached_source(spec, folder, path)
    if source is None:
        source = _download(spec, folder, path, on_event, options, cancel)
    try:
        problems = spec.convert(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemSetError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from None
    except ParquetError as exc:
        raise ProblemSetError(str(exc)) from None
    return make_problem_set(spec.name, problems, license=spec.license,
                            source=f"{spec.repo}@{source['commit']} {spec.path}")


# ---- the cache -----------------------------------------------------------------------------


def _cached_source(spec: PublicSet, folder: Path, path: Path) -> dict | None:
    """The cache's record when the file is there and still hashes to it; None when there is
    nothing cached (or it was for another file); ProblemSetError when the file is damaged."""
    record_path = folder / SOURCE_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("repo") != spec.repo \
            or record.get("path") != spec.path or not _COMMIT.match(str(record.get("commit"))) \
            or not path.is_file():
        return None
    if path.stat().st_size == record.get("size") and file_sha256(path) == record.get("sha256"):
        return record
    record_path.unlink(missing_ok=True)  # so the next run downloads it anew
    raise ProblemSetError(f"{path}: the cached {spec.name} set is damaged (it no longer "
                          f"matches {spec.repo}@{str(record['commit'])[:12]}); run again to "
                          "download it anew")


def _download(spec: PublicSet, folder: Path, path: Path, on_event: OnEvent,
              options: DownloadOptions | None, cancel: threading.Event | None) -> dict:
    deadline = Deadline()
    commit = _commit_of(spec, deadline)
    (remote,) = remote_files(spec.repo, (spec.path,), commit, deadline, repo_type="dataset")
    if remote.size > MAX_SET_BYTES:
        raise HubError(f"{spec.repo}/{spec.path} is {format_bytes(remote.size)}, larger than a "
                       f"problem set can be ({format_bytes(MAX_SET_BYTES)}); not downloading it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProblemSetError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    on_event(Notice(f"{spec.name}: {spec.repo} at {commit[:12]}, {spec.license} license, "
                    f"{format_bytes(remote.size)}"))
    options = dataclasses.replace(options or DownloadOptions(), use_hf_cache=False)
    downloaded = download_file(remote, path, on_event=on_event, options=options, cancel=cancel)
    record = {"name": spec.name, "repo": spec.repo, "revision": spec.revision,
              "commit": commit, "path": spec.path, "size": downloaded.size,
              "sha256": downloaded.sha256, "license": spec.license}
    source_file = folder / SOURCE_FILE
    try:
        replace_text(source_file, json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        raise ProblemSetError(f"cannot write {source_file}: {exc.strerror or exc}") from None
    return record


def _commit_of(spec: PublicSet, deadline: Deadline) -> str:
    """The commit `spec.revision` points at now, from the file's HEAD (as hf_hub_download
    asks it), so the file and the record name one version of the set."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(spec.repo, spec.path, repo_type="dataset", revision=spec.revision,
                     endpoint=hub_endpoint())
    try:
        metadata = get_hf_file_metadata(url, timeout=min(deadline.left(), REQUEST_READ_TIMEOUT))
    except Exception as exc:
        raise hub_error(exc, spec.repo, spec.path, spec.revision) from None
    commit = metadata.commit_hash
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise HubError(f"the Hub named no commit for {spec.repo} at {spec.revision}")
    return commit
