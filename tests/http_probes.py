"""Raw-socket probes of an HTTP server's framing and timeouts, shared by the local
receiver's and the Heroku web dyno's hostile tests. Every call is bounded in time."""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import time


def exchange(port: int, raw: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send `raw`, read until the server closes or `timeout` passes.
    Returns (everything read, whether the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def statuses(data: bytes) -> list[int]:
    """The status of every response in `data` (a smuggled request shows as a second one)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` (after any answer it sends) within `seconds`."""
    return read_until_closed(sock, seconds)[1]


def raise_own_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


@contextlib.contextmanager
def open_connections(port: int, count: int, first_bytes: bytes = b""):
    """`count` connections to `port`, each having sent `first_bytes` (maybe nothing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            if first_bytes:
                s.sendall(first_bytes)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def post_head(headers: dict[str, str], extra: str = "") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST / HTTP/1.1\r\nHost: x\r\n{lines}{extra}\r\n".encode()
