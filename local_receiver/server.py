"""A small threaded HTTP/1.1 server in front of `Receiver.handle` (standard library only).

POST on any path is an event; ``GET /healthz`` reports the queue; ``GET /metrics`` serves
Prometheus text (when the server is given a `metrics` callable); other methods get 405.
A body over the limit is refused from its Content-Length, before it is read.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from core.http import Headers, Request, Response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: DT and load tests reuse connections
    disable_nagle_algorithm = True  # headers and body go out without a 40 ms Nagle stall
    server: "ReceiverServer"

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/healthz":
            self._read_body()
            self._send(Response(200, self.server.health()))
        elif path == "/metrics" and self.server.metrics is not None:
            self._read_body()
            self._send_text(self.server.metrics())
        else:
            self._dispatch()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_POST  # core answers 405

    def _read_body(self) -> bytes | Response:
        raw_length = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return Response(400, {"error": "bad_request", "reason": "invalid Content-Length"})
        limit = self.server.max_body_bytes
        if length > limit:
            self.close_connection = True  # the unread body must not be parsed as a request
            return Response(413, {"error": "payload_too_large", "limit": limit})
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if isinstance(body, Response):
            if self.server.record is not None:
                self.server.record(body, started)
            self._send(body)
            return
        request = Request(self.command, body, Headers(self.headers.items()), self.path)
        server = self.server
        with server._count_lock:
            server.in_flight += 1
            server.idle.clear()
        try:
            response = server.handle(request)
        finally:
            with server._count_lock:
                server.in_flight -= 1
                if server.in_flight == 0:
                    server.idle.set()
        self._send(response)

    def _send(self, response: Response) -> None:
        payload = b"" if self.command == "HEAD" else response.body.encode("utf-8")
        self.send_response(response.status)
        for name, value in response.all_headers().items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_text(self, text: str) -> None:
        from .metrics import CONTENT_TYPE

        payload = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # access logs: core logs each event
        pass


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handle: Callable[[Request], Response],
        health: Callable[[], dict],
        max_body_bytes: int,
        metrics: Callable[[], str] | None = None,
        record: Callable[[Response, float], None] | None = None,
    ):
        self.record = record  # ingest metrics of answers given before `handle` (413, 400)
        self.handle = handle
        self.health = health
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0  # requests being handled now (the worker yields to them)
        self.idle = threading.Event()  # set while no request is being handled
        self.idle.set()
        self._count_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

