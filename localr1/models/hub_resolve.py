"""Resolving what `pull` names into files on the Hugging Face Hub, before anything is downloaded.

The Hub's JSON API is called on huggingface_hub's shared HTTP client (the user's token,
`HF_ENDPOINT`, offline mode), but read by us, so a hostile or broken server cannot hang or fool
a pull: one overall deadline for resolving (`LOCALR1_HUB_TIMEOUT`, 60 s), a read timeout per
request, at most 50 pages of a listing and 32 MB of JSON, and every file name and size checked
before a plan is made (see safe_paths). A host that cannot be resolved or refuses connections is
one line naming it and why, at once: the API calls are not retried, and huggingface_hub's own
retry warnings are silenced, so hub_transfer's retries are the only ones.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from localr1.errors import LocalR1Error
from localr1.models.safe_paths import join_inside, shown_name, unsafe_reason
from localr1.models.split_names import is_later_part, part_names, without_split_suffix

if TYPE_CHECKING:
    from localr1.models.catalog import Catalog, CatalogEntry

DEFAULT_QUANT = "Q4_K_M"  # what `owner/repo` without a quant pulls, like Ollama's hf.co/ names
_QUANT_IN_NAME = re.compile(
    r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|MXFP4(?:_MOE)?|TQ\d_\d)$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")

HUB_TIMEOUT_ENV = "LOCALR1_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 60.0  # seconds for all the API calls of one resolution together
REQUEST_READ_TIMEOUT = 20.0  # seconds without a byte from the API
MAX_PAGES = 50  # of a paginated listing; the Hub pages 1,000 entries at a time
MAX_API_BYTES = 32 << 20
REACH_HINT = "check the network or set HF_ENDPOINT"


class HubError(LocalR1Error):
    """The Hub said no (unknown repo, revision or file, gated, offline) or cannot be reached."""


# ---- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    revision: str
    path: str  # in the repo, "/"-separated
    size: int
    sha256: str | None  # the LFS oid; None for a file kept in git itself
    git_oid: str  # the git blob id: what a non-LFS file is verified against
    url: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PullPlan:
    """What `pull REFERENCE` will fetch: resolved on the Hub, nothing downloaded yet."""

    name: str  # the name it is installed under: "r1:7b-q4_k_m" or "owner/repo:Q4_K_M"
    reference: str  # what the user typed
    repo: str
    revision: str
    quant: str | None
    files: tuple[RemoteFile, ...]  # every part of a split GGUF, in order
    catalog_entry: CatalogEntry | None

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def local_paths(self, models_dir: Path) -> tuple[Path, ...]:
        return tuple(local_path(models_dir, f.repo, f.path) for f in self.files)


# ---- names and references -----------------------------------------------------------------------


def local_path(models_dir: Path, repo: str, path_in_repo: str) -> Path:
    """Where a Hub file lives once pulled: models_dir/<owner>/<repo>/<path in repo>, refused
    (UnsafePathError) when the repo or the name would lead anywhere else."""
    return join_inside(models_dir, repo, path_in_repo, what=f"file name from {repo}")


def quant_from_filename(filename: str) -> str | None:
    """'X-Q4_K_M.gguf' -> 'Q4_K_M'; split parts ('-00001-of-00002') are handled too."""
    stem = without_split_suffix(filename.rsplit("/", 1)[-1])
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    match = _QUANT_IN_NAME.search(stem)
    return match[1].upper() if match else None


@dataclass(frozen=True)
class HubReference:
    repo: str
    quant: str | None  # "owner/repo:QUANT" (or neither: the default quant)
    file: str | None  # "owner/repo/path/file.gguf"


def parse_hub_reference(text: str) -> HubReference | None:
    """`owner/repo:QUANT`, `owner/repo/FILE.gguf` or `owner/repo` (hf.co/ prefix allowed)."""
    text = re.sub(r"^(?:https?://)?(?:hf\.co|huggingface\.co)/", "", text.strip())
    if text.lower().endswith(".gguf"):
        parts = text.split("/")
        if len(parts) < 3 or not all(parts):
            return None
        return HubReference("/".join(parts[:2]), None, "/".join(parts[2:]))
    repo, _, quant = text.partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")) or (_ and not quant):
        return None
    return HubReference(repo, quant.upper() or None, None)


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_timeout() -> float:
    """Seconds one resolution may take in all: LOCALR1_HUB_TIMEOUT, else 60."""
    text = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_HUB_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise HubError(f"{HUB_TIMEOUT_ENV}={text!r} is not a number of seconds")
    return seconds


class Deadline:
    """The time left for one resolution; HubError once it has run out."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = hub_timeout() if seconds is None else seconds
        self._end = time.monotonic() + self.seconds

    def left(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def over(self) -> bool:
        return time.monotonic() >= self._end

    def expired(self) -> HubError:
        return HubError(f"the Hub at {hub_endpoint()} did not answer within "
                        f"{self.seconds:g} s (set {HUB_TIMEOUT_ENV} to wait longer)")


# ---- resolution ---------------------------------------------------------------------------


def resolve_pull(reference: str, catalog: Catalog) -> PullPlan:
    """Turn a catalog name, `owner/repo:QUANT` or `owner/repo/FILE.gguf` into files on the Hub."""
    deadline = Deadline()
    entry = catalog.find(reference)
    if entry is not None:
        return _plan(entry.name, reference, entry.repo, entry.model.revision,
                     entry.quant.quant, entry.files, entry, deadline)
    hub_ref = parse_hub_reference(reference)
    if hub_ref is None:
        from localr1.models.catalog import UnknownModelError, nearest_hint

        raise UnknownModelError(
            f"unknown model '{reference}'{nearest_hint(reference, catalog.names())} "
            "(pull takes a catalog name, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf)")
    if hub_ref.file is not None:
        paths = part_names(hub_ref.file)
        quant = quant_from_filename(hub_ref.file)
        name = f"{hub_ref.repo}:{quant}" if quant else f"{hub_ref.repo}/{paths[0]}"
        return _plan(name, reference, hub_ref.repo, "main", quant, paths, None, deadline)
    quant, paths = _find_quant(hub_ref.repo, hub_ref.quant, deadline)
    return _plan(f"{hub_ref.repo}:{quant}", reference, hub_ref.repo, "main", quant, paths, None,
                 deadline)


def _plan(name: str, reference: str, repo: str, revision: str, quant: str | None,
          paths: tuple[str, ...], entry: CatalogEntry | None, deadline: Deadline) -> PullPlan:
    for path in paths:
        reason = unsafe_reason(path)
        if reason is not None:
            raise HubError(f"{repo} names an unsafe file '{shown_name(path)}' ({reason}); "
                           "refusing to download it")
    return PullPlan(name, reference, repo, revision, quant,
                    remote_files(repo, paths, revision, deadline), entry)


def remote_files(repo: str, paths: tuple[str, ...], revision: str = "main",
                 deadline: Deadline | None = None,
                 repo_type: str = "model") -> tuple[RemoteFile, ...]:
    """Size, sha256 and URL of each path, in one paths-info call; `repo_type` "dataset" for
    a dataset repo (eval's problem sets)."""
    from huggingface_hub import hf_hub_url

    endpoint = hub_endpoint()
    url = f"{endpoint}/api/{repo_type}s/{repo}/paths-info/{quote(revision, safe='')}"
    data, _ = _api_call("POST", url, repo, revision, deadline or Deadline(),
                        data={"paths": list(paths), "expand": False})
    by_path = {entry["path"]: entry for entry in _entries(data, repo)
               if entry.get("type") == "file"}
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise HubError(f"{repo} has no file '{shown_name(missing[0])}' (revision {revision})")
    files = []
    for path in paths:
        size, sha256, git_oid = _checked_facts(by_path[path], repo)
        files.append(RemoteFile(repo, revision, path, size, sha256, git_oid,
                                hf_hub_url(repo, path, revision=revision, endpoint=endpoint,
                                           repo_type=repo_type)))
    return tuple(files)


def _checked_facts(entry: dict[str, Any], repo: str) -> tuple[int, str | None, str]:
    """(size, sha256, git oid) of a file entry, or HubError when any of them is malformed."""
    where = f"{repo}/{shown_name(entry['path'])}"
    size = entry.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise HubError(f"the Hub gave an invalid size for {where}: "
                       f"{shown_name(repr(size), 40)}")
    lfs = entry.get("lfs")
    sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
    if lfs is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        raise HubError(f"the Hub gave an invalid sha256 for {where}")
    git_oid = entry.get("oid")
    if not (isinstance(git_oid, str) and _GIT_OID.match(git_oid)):
        raise HubError(f"the Hub gave an invalid git id for {where}")
    return size, sha256, git_oid


def _find_quant(repo: str, quant: str | None, deadline: Deadline) -> tuple[str, tuple[str, ...]]:
    """The GGUF file(s) of one quant in a repo: `-Q4_K_M.gguf` or its split parts."""
    tree = [e["path"] for e in _list_tree(repo, deadline)
            if e.get("type") == "file" and e["path"].lower().endswith(".gguf")]
    by_quant: dict[str, list[str]] = {}
    for path in tree:
        found = quant_from_filename(path)
        if found:
            by_quant.setdefault(found, []).append(path)
    wanted = quant or (DEFAULT_QUANT if DEFAULT_QUANT in by_quant else None)
    available = ", ".join(sorted(by_quant)) or "none"
    if wanted is None:
        raise HubError(f"{repo}: name a quant, as in {repo}:QUANT (available: {available})")
    if wanted not in by_quant:
        raise HubError(f"{repo} has no {wanted} GGUF (available: {available})")
    files = sorted(by_quant[wanted])
    firsts = [p for p in files if not is_later_part(p)]
    if not firsts:
        raise HubError(f"{repo}: its {wanted} GGUF has later parts only "
                       f"({', '.join(shown_name(p) for p in files[:3])}); the first is missing")
    if len(firsts) > 1:
        raise HubError(f"{repo} has several {wanted} files "
                       f"({', '.join(shown_name(p) for p in firsts)}); "
                       f"pull one as {repo}/FILE.gguf")
    return wanted, part_names(firsts[0])


def _list_tree(repo: str, deadline: Deadline) -> list[dict[str, Any]]:
    """Every entry of the repo's tree at main, following the Hub's `Link: next` pages."""
    endpoint = hub_endpoint()
    url: str | None = f"{endpoint}/api/models/{repo}/tree/main"
    params: dict[str, Any] | None = {"recursive": True, "expand": False}
    entries: list[dict[str, Any]] = []
    for _page in range(MAX_PAGES):
        data, url = _api_call("GET", url, repo, "main", deadline, params=params)
        entries += _entries(data, repo)
        if url is None:
            return entries
        if not url.startswith(endpoint + "/"):  # the user's token goes with every request
            raise HubError(f"the Hub's file list for {repo} links to another site; refusing it")
        params = None  # the next link carries its own query
    raise HubError(f"the Hub's file list for {repo} goes on for more than {MAX_PAGES} pages; "
                   "refusing it")


def _entries(data: Any, repo: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) for e in data):
        raise HubError(f"the Hub's answer for {repo} is not a list of files")
    return data


def _api_call(method: str, url: str, repo: str, revision: str, deadline: Deadline,
              **request: Any) -> tuple[Any, str | None]:
    """One JSON API call within the deadline: (the parsed answer, the next page's URL)."""
    import json

    import httpx2
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, validate_repo_id

    read_timeout = REQUEST_READ_TIMEOUT
    try:
        validate_repo_id(repo)
        left = deadline.left()
        read_timeout = min(left, REQUEST_READ_TIMEOUT)
        timeout = httpx2.Timeout(read_timeout, connect=min(left, 10.0))
        with hub_session().stream(method, url, headers=build_hf_headers(), timeout=timeout,
                                  **request) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_API_BYTES:
                    raise HubError(f"the Hub's answer for {repo} is larger than "
                                   f"{MAX_API_BYTES >> 20} MB; refusing it")
                deadline.left()  # a trickle of bytes must not outlast the deadline
        whole = httpx2.Response(response.status_code, headers=response.headers,
                                content=bytes(body), request=response.request)
        hf_raise_for_status(whole)
        try:
            data = json.loads(whole.content)
        except ValueError:
            raise HubError(f"the Hub's answer for {repo} is not valid JSON") from None
        return data, whole.links.get("next", {}).get("url")
    except httpx2.ConnectTimeout as exc:
        raise unreachable(exc) from None
    except httpx2.TimeoutException:
        if read_timeout < REQUEST_READ_TIMEOUT or deadline.over():
            raise deadline.expired() from None  # the time left, not the read timeout, ran out
        raise HubError(f"the Hub at {hub_endpoint()} stopped answering about {repo} (nothing "
                       f"for {read_timeout:g} s); try again later") from None
    except Exception as exc:
        raise hub_error(exc, repo, revision=revision) from None


def hub_error(exc: BaseException, repo: str, path: str | None = None,
              revision: str = "main") -> LocalR1Error:
    """huggingface_hub's and httpx's exceptions as one-line messages."""
    import httpx2
    from huggingface_hub import errors

    if isinstance(exc, LocalR1Error):
        return exc
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so nothing can be pulled; unset it to download")
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{repo} is gated: accept its terms on the Hub, then log in "
                        "(`hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"repository '{repo}' not found on {hub_endpoint()} (if it is private, "
                        "log in with `hf auth login` or set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{repo} has no revision '{revision}'")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return HubError(f"{repo} has no file '{shown_name(path)}' (revision {revision})" if path
                        else f"{repo}: file not found (revision {revision})")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return HubError(f"the Hub answered HTTP {status} for {repo}"
                        f"{'/' + shown_name(path) if path else ''}")
    if isinstance(exc, errors.HFValidationError):
        return HubError(f"'{shown_name(repo)}' is not a valid Hub repository name")
    if isinstance(exc, httpx2.TransportError):
        return unreachable(exc)
    where = f"{repo}/{shown_name(path)}" if path else repo
    if isinstance(exc, httpx2.TooManyRedirects):
        return HubError(f"the Hub sent too many redirects for {where} (a redirect loop?)")
    if isinstance(exc, httpx2.DecodingError):
        return HubError(f"the Hub's answer for {where} could not be decoded ({one_line(exc)})")
    if isinstance(exc, httpx2.HTTPError | httpx2.StreamError | httpx2.InvalidURL):
        return HubError(f"talking to the Hub about {where} failed: {one_line(exc)}")
    raise exc


def hub_session():
    """huggingface_hub's shared HTTP client, with its "Retrying in 8s" warnings silenced (unless
    the user asked for them with HF_HUB_VERBOSITY): localr1 retries on its own terms."""
    from huggingface_hub.utils import get_session

    if not os.environ.get("HF_HUB_VERBOSITY"):
        logging.getLogger("huggingface_hub.utils._http").setLevel(logging.ERROR)
    return get_session()


def is_connect_failure(exc: BaseException) -> bool:
    """No connection was made at all: a name not resolved, refused, timed out. Retrying that
    for long only delays the answer."""
    import httpx2

    return isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)


def unreachable(exc: BaseException) -> HubError:
    """'cannot reach https://huggingface.co (name not resolved); check the network ...'."""
    return HubError(f"cannot reach {_failed_origin(exc)} ({transport_reason(exc)}); {REACH_HINT}")


def transport_reason(exc: BaseException) -> str:
    """Why an HTTP transport failed, in a few words, from the OS error underneath."""
    import httpx2

    if isinstance(exc, httpx2.ConnectTimeout):
        return "connection timed out"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "name not resolved"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return one_line(exc)


def _failed_origin(exc: BaseException) -> str:
    """HF_ENDPOINT when the failed request went there, else the host it went to (a CDN)."""
    endpoint = hub_endpoint()
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when none was set
        return endpoint
    if str(url).startswith(endpoint + "/"):
        return endpoint
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
