"""A loopback Hugging Face Hub for tests and benchmarks, spoken to by the real huggingface_hub.

It serves files from disk the way huggingface.co does for the calls localr1 and
`hf_hub_download` make (checked against huggingface_hub 2.4's file_download.py / hf_api.py):

* ``HEAD`` and ``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` and
  ``X-Linked-Etag`` (the LFS sha256, quoted), ``X-Linked-Size``, ``Accept-Ranges``; ``Range:
  bytes=N-`` / ``bytes=N-M`` answered with 206 and ``Content-Range``, 416 when unsatisfiable;
* ``POST /api/models/{repo}/paths-info/{revision}`` (form ``paths=...&expand=...``): a JSON list
  of ``{type, path, size, oid, lfs: {oid, size, pointerSize}}``;
* ``GET /api/models/{repo}/tree/{revision}[/{folder}]?recursive=...``: the same entries;
* dataset repos (``add_file(..., repo_type="dataset")``) under ``/datasets/{repo}/resolve/...``
  and ``/api/datasets/{repo}/...``, as the Hub serves them;
* errors as the Hub reports them: 404 with ``X-Error-Code`` RepoNotFound, RevisionNotFound or
  EntryNotFound (huggingface_hub turns those into its typed exceptions).

Knobs for failure tests, set on the server object at any time: ``drop_after_bytes`` (close the
connection after that many body bytes, for the next ``drops_left`` GETs), ``ignore_range``
(answer 200 with the whole file), ``corrupt_paths`` (flip one byte while serving: sha mismatch),
``throttle_bytes_per_s``, ``files_redirect_to`` (an origin: file GETs answer 302 there, as the
Hub sends LFS files to its CDN).  Every request is logged in ``requests``.

Hostile knobs, for a server that lies or stalls on purpose: any name can be served with
``add_file`` (``../`` parts, a NUL, 300 characters; a name the client's URL normalization
changes is still answered), ``reported_sizes`` (what the API says a file's size is: negative,
a string), ``trickle_api_interval_s`` / ``trickle_file_interval_s`` (send the API answers /
file bodies one byte per interval; a real attack would use 2 s, tests use less) and
``endless_pages`` (every tree listing links to a next page, forever; on
``page_link_origin`` when set, to send the client elsewhere), ``bad_gzip_api`` (API answers
claim ``Content-Encoding: gzip`` but are not gzip), ``misplaced_ranges`` (a 206's
``Content-Range`` names a start one byte after the one asked for).

Plain GETs without knobs use ``os.sendfile`` so the benchmark measures the client, not us.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1 << 20
TEST_TOKEN = "hf_localr1_test_token"


@dataclass(frozen=True)
class ServedFile:
    path: str  # path inside the repo, "/"-separated
    source: Path
    size: int
    sha256: str
    git_oid: str  # LFS files: a stand-in for the pointer's blob id; others: the real blob id
    lfs: bool = True


@dataclass
class ServedRepo:
    repo_id: str
    commit: str
    files: dict[str, ServedFile] = field(default_factory=dict)
    repo_type: str = "model"

    @property
    def url_id(self) -> str:
        """The repo as its resolve URLs name it (and the key in HubServer.repos)."""
        return self.repo_id if self.repo_type == "model" else f"{self.repo_type}s/{self.repo_id}"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


class HubServer:
    """A Hub on 127.0.0.1 with an OS-assigned port, served from a background thread."""

    def __init__(self) -> None:
        self.repos: dict[str, ServedRepo] = {}
        self.requests: list[RequestRecord] = []
        self.drop_after_bytes: int | None = None
        self.drops_left = 0
        self.ignore_range = False
        self.corrupt_paths: set[str] = set()
        self.throttle_bytes_per_s: float | None = None
        self.files_redirect_to: str | None = None
        self.reported_sizes: dict[str, object] = {}
        self.trickle_api_interval_s: float | None = None
        self.trickle_file_interval_s: float | None = None
        self.endless_pages = False
        self.page_link_origin: str | None = None
        self.bad_gzip_api = False
        self.misplaced_ranges = False
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, repo_id: str, path_in_repo: str, source: Path,
                 sha256: str | None = None, lfs: bool = True,
                 repo_type: str = "model") -> ServedFile:
        key = ServedRepo(repo_id, "", repo_type=repo_type).url_id
        repo = self.repos.get(key)
        if repo is None:
            commit = hashlib.sha1(key.encode()).hexdigest()
            repo = self.repos[key] = ServedRepo(repo_id, commit, repo_type=repo_type)
        source = Path(source)
        size = source.stat().st_size
        git_oid = hashlib.sha1(path_in_repo.encode()).hexdigest() if lfs else \
            hashlib.sha1(f"blob {size}\0".encode() + source.read_bytes()).hexdigest()
        served = ServedFile(path_in_repo, source, size, sha256 or file_sha256(source), git_oid,
                            lfs)
        repo.files[path_in_repo] = served
        return served

    def gets(self, path_suffix: str = "") -> list[RequestRecord]:
        """GET requests for resolve URLs ending in `path_suffix`."""
        return [r for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(path_suffix)]

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()  # ends trickles still being sent
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def served_at(self, url_path: str) -> ServedFile | None:
        """The file whose resolve URL the client normalized to `url_path` (dot segments
        removed, as httpx does), for names like `../../x.gguf`."""
        for repo in self.repos.values():
            for served in repo.files.values():
                for revision in ("main", repo.commit):
                    url = f"/{repo.url_id}/resolve/{revision}/{served.path}"
                    if url != posixpath.normpath(url) and posixpath.normpath(url) == url_path:
                        return served
        return None

    def take_drop(self) -> int | None:
        """Bytes to send before dropping this response's connection, or None to send it all."""
        with self._lock:
            if self.drop_after_bytes is None or self.drops_left <= 0:
                return None
            self.drops_left -= 1
            return self.drop_after_bytes


_RESOLVE = re.compile(r"^/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/"
                      r"(?P<file>.+)$")
_API = re.compile(r"^/api/(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)/"
                  r"(?P<kind>paths-info|tree)/(?P<rev>[^/]+)(?:/(?P<folder>.+))?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass

        def _record(self) -> str:
            path = urlsplit(self.path).path
            hub.requests.append(RequestRecord(self.command, unquote(path),
                                              {k.lower(): v for k, v in self.headers.items()}))
            return path

        # ---- routing -------------------------------------------------------------------

        def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
            self._resolve(head=True)

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            if path.startswith("/api/"):
                self._api()
            else:
                self._resolve(head=False)

        def do_POST(self) -> None:  # noqa: N802
            self._api()

        # ---- errors --------------------------------------------------------------------

        def _error(self, status: int, code: str, message: str,
                   commit: str | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _repo_and_revision(self, repo_id: str, revision: str) -> ServedRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo

        # ---- /api ----------------------------------------------------------------------

        def _api(self) -> None:
            path = self._record()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            match = _API.match(unquote(path))
            if not match or (match["kind"] == "paths-info") != (self.command == "POST"):
                self._error(404, "NotFound", "no such endpoint")
                return
            key = match["repo"] if match["type"] == "models" else f"datasets/{match['repo']}"
            repo = self._repo_and_revision(key, match["rev"])
            if repo is None:
                return
            query = parse_qs(urlsplit(self.path).query)
            if match["kind"] == "paths-info":
                form = parse_qs(body)
                entries = [e for p in form.get("paths", []) if (e := _entry(repo, p))]
            else:
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                entries = _tree(repo, match["folder"] or "", recursive)
            for entry in entries:
                if entry["path"] in hub.reported_sizes:
                    entry["size"] = hub.reported_sizes[entry["path"]]
            data = json.dumps(entries).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", repo.commit)
            if hub.bad_gzip_api:
                self.send_header("Content-Encoding", "gzip")
            if hub.endless_pages and match["kind"] == "tree":
                page = int(query.get("cursor", ["0"])[0]) + 1
                origin = hub.page_link_origin or hub.url
                self.send_header("Link", f'<{origin}{path}?cursor={page}>; rel="next"')
            self.end_headers()
            if hub.trickle_api_interval_s:
                self._trickle(data, hub.trickle_api_interval_s)
            else:
                self.wfile.write(data)

        def _trickle(self, data: bytes, interval: float) -> None:
            """One byte per interval, until done, the client hangs up or the server stops."""
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    if hub.stopped.wait(interval):
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        # ---- /resolve ------------------------------------------------------------------

        def _resolve(self, head: bool) -> None:
            path = self._record()
            if hub.files_redirect_to and not head:
                self.send_response(302)
                self.send_header("Location", hub.files_redirect_to + path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            match = _RESOLVE.match(path)
            served = hub.served_at(unquote(path))
            if served is not None:
                repo = next(r for r in hub.repos.values() if served in r.files.values())
            elif not match:
                self._error(404, "NotFound", "no such endpoint")
                return
            else:
                repo = self._repo_and_revision(unquote(match["repo"]), unquote(match["rev"]))
                if repo is None:
                    return
                served = repo.files.get(unquote(match["file"]))
            if served is None:
                self._error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
                return
            start, end = 0, served.size - 1
            status = 200
            requested = self.headers.get("Range")
            if requested and not head and not hub.ignore_range:
                ranged = _RANGE.match(requested.strip())
                if not ranged or int(ranged[1]) >= served.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{served.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(ranged[1])
                end = min(int(ranged[2]), end) if ranged[2] else end
                status = 206
            self.send_response(status)
            self.send_header("X-Repo-Commit", repo.commit)
            if served.lfs:
                self.send_header("ETag", f'"{served.sha256}"')
                self.send_header("X-Linked-Etag", f'"{served.sha256}"')
                self.send_header("X-Linked-Size", str(served.size))
            else:
                self.send_header("ETag", f'"{served.git_oid}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                shown_start = start + 1 if hub.misplaced_ranges else start
                self.send_header("Content-Range", f"bytes {shown_start}-{end}/{served.size}")
            self.end_headers()
            if not head:
                self._send_body(served, start, end + 1)

        def _send_body(self, served: ServedFile, start: int, stop: int) -> None:
            if hub.trickle_file_interval_s:
                with open(served.source, "rb") as f:
                    f.seek(start)
                    self._trickle(f.read(stop - start), hub.trickle_file_interval_s)
                return
            drop_after = hub.take_drop()
            corrupt = served.path in hub.corrupt_paths
            throttle = hub.throttle_bytes_per_s
            try:
                with open(served.source, "rb") as f:
                    if drop_after is None and not corrupt and not throttle \
                            and hasattr(os, "sendfile"):
                        self.wfile.flush()
                        _sendfile(self.connection, f, start, stop - start)
                        return
                    f.seek(start)
                    sent, position, began = 0, start, time.monotonic()
                    while position < stop:
                        size = min(CHUNK if not throttle else 64 * 1024, stop - position)
                        if drop_after is not None:
                            size = min(size, drop_after - sent)
                        chunk = bytearray(f.read(size))
                        if corrupt and position <= served.size // 2 < position + len(chunk):
                            chunk[served.size // 2 - position] ^= 0xFF
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        position += len(chunk)
                        if drop_after is not None and sent >= drop_after:
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        if throttle:
                            ahead = sent / throttle - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


def _sendfile(sock: socket.socket, f, offset: int, count: int) -> None:
    while count > 0:
        sent = os.sendfile(sock.fileno(), f.fileno(), offset, min(count, 1 << 30))
        if sent == 0:
            break
        offset += sent
        count -= sent


def _file_entry(served: ServedFile) -> dict:
    entry = {"type": "file", "path": served.path, "size": served.size, "oid": served.git_oid}
    if served.lfs:
        entry["lfs"] = {"oid": served.sha256, "size": served.size, "pointerSize": 134}
    return entry


def _folders(repo: ServedRepo) -> set[str]:
    folders = set()
    for path in repo.files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return folders


def _entry(repo: ServedRepo, path: str) -> dict | None:
    if path in repo.files:
        return _file_entry(repo.files[path])
    if path in _folders(repo):
        return {"type": "directory", "path": path,
                "oid": hashlib.sha1(path.encode()).hexdigest()}
    return None


def _tree(repo: ServedRepo, folder: str, recursive: bool) -> list[dict]:
    prefix = f"{folder}/" if folder else ""
    paths = sorted({*repo.files, *_folders(repo)})
    entries = []
    for path in paths:
        if not path.startswith(prefix) or path == folder:
            continue
        if not recursive and "/" in path[len(prefix):]:
            continue
        entries.append(_entry(repo, path))
    return entries


@contextlib.contextmanager
def hub_for_tests(monkeypatch, hf_home: Path) -> Iterator[HubServer]:
    """A running HubServer that huggingface_hub (and localr1) talk to, in this process.

    HF_ENDPOINT points at it, offline mode is lifted (conftest sets HF_HUB_OFFLINE=1 as a
    safety net), the HF cache and token are the test's own, and huggingface_hub's HTTP client
    refuses any host but 127.0.0.1, so a mistake can never reach huggingface.co.
    """
    import httpx2
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

    def loopback_only(request: httpx2.Request) -> None:
        if request.url.host != "127.0.0.1":
            raise RuntimeError(f"a test tried to reach {request.url}")

    def client_factory() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [hf_request_event_hook, loopback_only]},
                             follow_redirects=True, timeout=None)

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setenv("HF_TOKEN", TEST_TOKEN)
        set_client_factory(client_factory)
        try:
            yield server
        finally:
            set_client_factory(default_client_factory)


def subprocess_env(server: HubServer, hf_home: Path) -> dict[str, str]:
    """The environment for a child process that should pull from `server`."""
    env = dict(os.environ)
    env.update(HF_ENDPOINT=server.url, HF_HUB_OFFLINE="0", HF_HOME=str(hf_home),
               HF_TOKEN=TEST_TOKEN)
    env.pop("HF_HUB_CACHE", None)
    return env
