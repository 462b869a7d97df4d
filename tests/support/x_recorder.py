"""A local stand-in for the X API v2 that records requests (the X API is the one outside
service the tests cannot reach): a real HTTP server on 127.0.0.1, so tweepy's whole
request path runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """What the fake X API received, and how it answers the next requests."""

    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    # Handlers wait on this before answering when ``hold`` is set (timeout test).
    release: threading.Event = field(default_factory=threading.Event)
    hold: bool = False
    status: int = 201
    answer: dict[str, Any] | None = None  # None: echo like POST /2/tweets
    answer_headers: dict[str, str] = field(default_factory=dict)


def _handler_for(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
            recorder.received.set()
            if recorder.hold:
                recorder.release.wait(10)
            answer = recorder.answer
            if answer is None:
                text = json.loads(body).get("text", "") if body else ""
                answer = {"data": {"edit_history_tweet_ids": ["1234"], "id": "1234", "text": text}}
            payload = json.dumps(answer).encode()
            try:
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in recorder.answer_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        do_POST = do_GET = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

    return Handler


@pytest.fixture
def x_api() -> Iterator[Recorder]:
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(recorder))
    server.daemon_threads = True
    port = server.server_address[1]
    recorder.base_url = f"http://127.0.0.1:{port}"
    serving = threading.Event()

    def serve() -> None:
        serving.set()
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=serve, name="fake-x-api", daemon=True)
    thread.start()
    assert serving.wait(5), "fake X API did not start"
    try:
        yield recorder
    finally:
        recorder.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
