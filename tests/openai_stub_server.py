"""A tiny OpenAI-compatible HTTP server for tests (never the real OpenAI).

It listens on 127.0.0.1 on a free port, answers `POST /v1/chat/completions` and
`GET /v1/models`, records every request (path, headers, JSON body) and replies with
whatever the test queued: canned text, an error status, a malformed body or a slow answer.

    with OpenAIStubServer() as stub:
        stub.queue(StubReply.text("a refined prompt"))
        ...  # point the client at stub.base_url
        assert stub.chat_requests[0].body["model"] == "gpt-4o"
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class StubReply:
    """One programmed answer. Build it with the class methods below."""

    status: int = 200
    content: str | None = None  # assistant message text for a 200 answer
    error_code: str | None = None
    error_message: str | None = None
    raw_body: bytes | None = None  # sent verbatim (malformed answers)
    delay_s: float = 0.0  # wait before answering (client timeouts)

    @classmethod
    def text(cls, content: str) -> StubReply:
        return cls(content=content)

    @classmethod
    def error(cls, status: int, message: str, code: str | None = None) -> StubReply:
        return cls(status=status, error_code=code, error_message=message)

    @classmethod
    def malformed(cls, raw: bytes = b"<html>this is not json") -> StubReply:
        return cls(raw_body=raw)

    @classmethod
    def slow(cls, delay_s: float, content: str = "too late") -> StubReply:
        return cls(content=content, delay_s=delay_s)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None for GET / unparsable bodies


@dataclass
class _State:
    replies: list[StubReply] = field(default_factory=list)
    default: StubReply = field(default_factory=lambda: StubReply.text("a stub answer"))
    requests: list[RecordedRequest] = field(default_factory=list)
    models: list[str] = field(default_factory=lambda: ["gpt-4o", "stub-vision"])
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)


def _completion_body(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class _Handler(BaseHTTPRequestHandler):
    server: _StubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def _route(self) -> str:
        """The path without its query string (recorded requests keep the full path)."""
        return self.path.split("?", 1)[0].rstrip("/")

    def _record(self, body: Any) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(
                RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
            )

    def _send_json(self, status: int, payload: Any) -> None:
        self._send_bytes(status, json.dumps(payload).encode())

    def _send_bytes(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record(None)
        if self._route() == "/v1/models":
            models = [{"id": name, "object": "model"} for name in self.server.state.models]
            self._send_json(200, {"object": "list", "data": models})
        else:
            self._send_json(404, {"error": {"message": "not found", "code": None}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(body)
        if self._route() != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": None}})
            return
        state = self.server.state
        with state.lock:
            reply = state.replies.pop(0) if state.replies else state.default
        if reply.delay_s and state.closing.wait(reply.delay_s):
            return  # server is shutting down: drop the slow answer
        if reply.raw_body is not None:
            self._send_bytes(reply.status, reply.raw_body)
        elif reply.status != 200:
            error = {"message": reply.error_message, "type": "stub_error", "code": reply.error_code}
            self._send_json(reply.status, {"error": error})
        else:
            model = (body or {}).get("model", "unknown")
            self._send_json(200, _completion_body(model, reply.content or ""))


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out closes its socket; that is expected here


class OpenAIStubServer:
    """Context manager running the stub in a background thread."""

    def __init__(self) -> None:
        self._server = _StubHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        # A short poll interval keeps shutdown (once per test) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def queue(self, *replies: StubReply) -> None:
        """Answer the next chat requests with these replies, in order."""
        with self._server.state.lock:
            self._server.state.replies.extend(replies)

    def set_default(self, reply: StubReply) -> None:
        """The answer used once the queue is empty."""
        self._server.state.default = reply

    def set_models(self, names: list[str]) -> None:
        self._server.state.models = list(names)

    def __enter__(self) -> OpenAIStubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.state.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
