"""HTTP to an OpenAI-compatible server: the endpoint's address, requests with retries and
backoff, and streamed replies that a cancel can cut off at once.

Stdlib `http.client`, not httpx2 (huggingface-hub's client): a streamed reply is read line by
line as it comes, and a cancel from another thread shuts the socket down so a read blocked on
a slow server returns at once, which httpx2 offers no thread-safe way to do; and `run` stays
free of an HTTP stack's import time. No proxy support: the endpoints this is for are on the
machine or the local network.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from localr1.engine.openai_wire import MAX_LINE_BYTES, EndpointError, StreamBroken, error_text

CONNECT_TIMEOUT = 10.0
# A server may think for a long time before its first byte (a long prompt on a slow machine).
READ_TIMEOUT = 600.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_ERROR_BODY = 64 << 10


@dataclass(frozen=True)
class Endpoint:
    """Where the server's API lives: `http(s)://host[:port]/prefix` ("/v1" when the URL
    gave no path), and the key to send as a bearer token."""

    scheme: str
    host: str
    port: int
    prefix: str
    api_key: str | None = None

    @classmethod
    def parse(cls, url: str, api_key: str | None = None,
              env_api_key: str | None = None) -> Endpoint:
        """`http://host:8080`, `http://host:8080/v1` or a full `.../v1/chat/completions`.
        `api_key` (given explicitly) always goes; `env_api_key` (OPENAI_API_KEY) only to an
        https or loopback server, where no one on the network can read it."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(f"not an http(s) URL: {url!r} (e.g. http://127.0.0.1:8080/v1)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise EndpointError(f"bad port in {url!r}") from None
        prefix = parts.path.rstrip("/")
        for tail in ("/chat/completions", "/models"):
            prefix = prefix.removesuffix(tail)
        endpoint = cls(parts.scheme, parts.hostname, port, prefix or "/v1", api_key or None)
        if endpoint.api_key is None and env_api_key and endpoint.keeps_keys_private:
            endpoint = replace(endpoint, api_key=env_api_key)
        return endpoint

    @property
    def keeps_keys_private(self) -> bool:
        """https, or a server on this machine: a bearer token is not sent in the clear."""
        if self.scheme == "https" or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def address(self) -> str:
        """host:port, as headers and messages show it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}{self.prefix}"


@dataclass(frozen=True)
class RetryPolicy:
    """A few short tries on 429/502/503/504 and connections that fail; a server's Retry-After is
    honoured up to `max_delay`."""

    tries: int = 4
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        asked = _retry_after_seconds(retry_after)
        wait = asked if asked is not None else self.first_delay * 2 ** (attempt - 1)
        return max(0.0, min(wait, self.max_delay))


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:  # the other form: an HTTP date
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _CancelWatch:
    """Shuts a connection's socket down when `cancel` is set, so a read blocked on a slow
    server (headers or the next line) returns at once."""

    def __init__(self, connection: http.client.HTTPConnection,
                 cancel: threading.Event) -> None:
        self._connection = connection
        self._cancel = cancel
        self._stopped = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="localr1-endpoint-cancel").start()

    def _watch(self) -> None:
        while not self._stopped.wait(0.05):
            if self._cancel.is_set():
                sock = self._connection.sock
                if sock is not None:
                    with contextlib.suppress(OSError):  # already closed
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def stop(self) -> None:
        self._stopped.set()


class Reply:
    """An open reply: its lines as they arrive; `close` (or a cancel) ends it."""

    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse, cancel: threading.Event,
                 watch: _CancelWatch) -> None:
        self._connection = connection
        self.response = response
        self.is_event_stream = "text/event-stream" in (response.getheader("Content-Type") or "")
        self._cancel = cancel
        self._watch = watch

    def lines(self) -> Iterator[bytes]:
        """The reply's lines; EndpointError when the connection breaks (unless cancelled)."""
        while not self._cancel.is_set():
            try:
                line = self.response.readline(MAX_LINE_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                if self._cancel.is_set():
                    return
                raise StreamBroken(f"the connection to the server broke mid-answer: "
                                    f"{_reason(exc)}") from None
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                raise EndpointError("the server sent a line longer than 16 MiB")
            yield line

    def read_all(self) -> bytes:
        try:
            return self.response.read(MAX_LINE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise StreamBroken(f"the connection to the server broke: {_reason(exc)}") \
                from None

    def close(self) -> None:
        self._watch.stop()
        self._connection.close()


def post(endpoint: Endpoint, path: str, body: dict[str, Any], cancel: threading.Event,
         policy: RetryPolicy) -> Reply | None:
    """POST `body` as JSON, retrying per `policy`; the open reply, or None when cancelled
    first. Errors are EndpointError with the server's own message."""
    return _with_retries(endpoint, "POST", path, json.dumps(body).encode(), cancel, policy)


def get_json(endpoint: Endpoint, path: str, policy: RetryPolicy) -> Any:
    reply = _with_retries(endpoint, "GET", path, None, threading.Event(), policy)
    assert reply is not None  # never cancelled
    try:
        return json.loads(reply.read_all())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EndpointError(f"{endpoint.url}{path} did not answer JSON") from None
    finally:
        reply.close()


def _with_retries(endpoint: Endpoint, method: str, path: str, data: bytes | None,
                  cancel: threading.Event, policy: RetryPolicy) -> Reply | None:
    for attempt in range(1, policy.tries + 1):
        if cancel.is_set():
            return None
        try:
            return _request(endpoint, method, path, data, cancel)
        except StreamBroken:
            if cancel.is_set():
                return None  # the cancel cut the connection
            raise
        except _Retry as retry:
            if attempt == policy.tries:
                raise EndpointError(f"{endpoint.url}: {retry} (after {policy.tries} tries)") \
                    from None
            if cancel.wait(policy.delay(attempt, retry.retry_after)):
                return None
    return None


def _request(endpoint: Endpoint, method: str, path: str, data: bytes | None,
             cancel: threading.Event) -> Reply:
    if endpoint.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            endpoint.host, endpoint.port, timeout=CONNECT_TIMEOUT,
            context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port,
                                                timeout=CONNECT_TIMEOUT)
    headers = {"Accept": "text/event-stream, application/json", "User-Agent": "localr1"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    watch = None
    try:
        try:
            connection.connect()
        except ssl.SSLError:
            raise
        except OSError as exc:  # nothing was sent: asking again is safe
            raise _Retry(f"cannot reach the server: {_reason(exc)}") from None
        assert connection.sock is not None
        connection.sock.settimeout(READ_TIMEOUT)
        watch = _CancelWatch(connection, cancel)
        connection.request(method, endpoint.prefix + path, body=data, headers=headers)
        response = connection.getresponse()
        if response.status in RETRY_STATUSES:
            raise _Retry(f"HTTP {response.status}: {error_text(_read_error_body(response))}",
                         response.getheader("Retry-After"))
        if response.status >= 400:
            hint = " (check --api-key or OPENAI_API_KEY)" if response.status in (401, 403) \
                else ""
            raise EndpointError(f"{endpoint.url}{path}: HTTP {response.status}: "
                                f"{error_text(_read_error_body(response))}{hint}")
        return Reply(connection, response, cancel, watch)
    except ssl.SSLError as exc:  # a certificate problem does not go away by retrying
        _close(connection, watch)
        raise EndpointError(f"{endpoint.url}: TLS failed: {_reason(exc)}") from None
    except (OSError, http.client.HTTPException) as exc:
        # The request went out: the server may be generating it already (a slow one for
        # minutes), so it is not sent again here; batch asks again whole (StreamBroken).
        _close(connection, watch)
        raise StreamBroken(f"{endpoint.url}: the server did not answer: {_reason(exc)}") \
            from None
    except BaseException:
        _close(connection, watch)
        raise


def _close(connection: http.client.HTTPConnection, watch: _CancelWatch | None) -> None:
    if watch is not None:
        watch.stop()
    connection.close()


def _read_error_body(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read(MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        return b""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())
