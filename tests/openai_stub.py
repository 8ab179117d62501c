"""A small scripted OpenAI-compatible server for the `--endpoint` tests: stdlib http.server in a
thread on 127.0.0.1, speaking the dialects real servers speak.

Each POST /v1/chat/completions takes the next reply of the script (the last one repeats):
a `Stream` of chunks (DeepSeek's `reasoning_content`, Ollama's `reasoning`, inline tags), a
`Status` (429 with Retry-After, 503), or a stream that drops its connection midway.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Stream:
    """An SSE reply: `pieces` are (field, text) deltas; `drop_after` pieces, the connection
    is cut (no final chunk, no [DONE])."""

    pieces: Sequence[tuple[str, str]]
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None
    drop_after: int | None = None
    error: str | None = None  # sent as an error chunk after the pieces, instead of the end


@dataclass(frozen=True)
class Status:
    code: int
    message: str = "busy"
    retry_after: str | None = "0"


@dataclass(frozen=True)
class Whole:
    """A server that ignores `stream`: one chat.completion JSON object."""

    message: dict[str, Any]
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Stall:
    """No reply at all until the stub stops (a server busy with a long prompt)."""


@dataclass(frozen=True)
class Hangup:
    """The request is read, then the connection closes with no reply (a server that died or
    reset it while generating)."""


Reply = Stream | Status | Whole | Stall | Hangup


def pieces(field_name: str, text: str, size: int = 3) -> list[tuple[str, str]]:
    """`text` as deltas of `size` characters: tags get split across chunks."""
    return [(field_name, text[i:i + size]) for i in range(0, len(text), size)]


def reasoning_field_stream(field_name: str, reasoning: str, answer: str, **kwargs) -> Stream:
    """DeepSeek/llama-server (`reasoning_content`) or Ollama/vLLM (`reasoning`)."""
    return Stream([*pieces(field_name, reasoning), *pieces("content", answer)], **kwargs)


def inline_stream(text: str, **kwargs) -> Stream:
    return Stream(pieces("content", text), **kwargs)


@dataclass
class StubOpenAI:
    script: list[Reply]
    models: Sequence[str] = ("stub-r1",)
    api_key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.received = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> StubOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.received.notify_all()
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        with self.received:
            assert self.received.wait_for(lambda: len(self.requests) >= count, timeout)


def _handler(stub: StubOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _authorized(self) -> bool:
            if stub.api_key is None or \
                    self.headers.get("Authorization") == f"Bearer {stub.api_key}":
                return True
            self._json(401, {"error": {"message": "Invalid API key", "type": "auth"}})
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self._authorized():
                return
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": name, "object": "model"} for name in stub.models]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            if not self._authorized():
                return
            reply = stub.next_reply(body, dict(self.headers))
            if isinstance(reply, Stall):
                stub.stopping.wait()
                self.close_connection = True
            elif isinstance(reply, Hangup):
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            elif isinstance(reply, Whole):
                self._json(200, {"id": "chatcmpl-stub", "object": "chat.completion",
                                 "choices": [{"index": 0, "message": reply.message,
                                              "finish_reason": reply.finish_reason}]})
            elif isinstance(reply, Status):
                extra = {"Retry-After": reply.retry_after} if reply.retry_after else {}
                self._json(reply.code, {"error": {"message": reply.message, "type": "busy"}},
                           extra)
            else:
                self._stream(reply, body.get("model", ""))

        def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def _stream(self, reply: Stream, model: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(choices: list, usage: dict | None = None) -> None:
                data = {"id": "chatcmpl-stub", "object": "chat.completion.chunk",
                        "model": model, "choices": choices}
                if usage is not None:
                    data["usage"] = usage
                self._send(f"data: {json.dumps(data)}\n\n")

            chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            for n, (name, text) in enumerate(reply.pieces):
                if reply.drop_after is not None and n == reply.drop_after:
                    self.wfile.write(b"40\r\ndata: {\"choi")  # half a chunk, then gone
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                chunk([{"index": 0, "delta": {name: text}, "finish_reason": None}])
            if reply.error is not None:
                self._send(json.dumps({"error": {"message": reply.error}}).join(
                    ("data: ", "\n\n")))
                self._send("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            chunk([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
            if reply.usage is not None:
                chunk([], reply.usage)
            self._send("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")

        def _send(self, text: str) -> None:
            raw = text.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

    return Handler
