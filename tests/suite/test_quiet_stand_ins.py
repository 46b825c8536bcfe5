"""The stand-ins' HTTP servers say nothing when a client hangs up: a traceback in the test
run's output reads as a failure that is not one."""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

from emulator.httpserver import QuietThreadingHTTPServer
from tests.waiting import wait_until


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _reset_mid_request(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head is never finished
    time.sleep(0.1)  # the server is reading it
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN: the server's read fails with ConnectionResetError


def test_a_client_resetting_its_connection_prints_nothing(capfd):
    errors: list[BaseException] = []

    class Recording(QuietThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            import sys

            errors.append(sys.exc_info()[1])
            super().handle_error(request, client_address)

    server = Recording(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        _reset_mid_request(server.server_address[1])
        wait_until(lambda: errors, timeout=10, what="the server seeing the reset")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(errors[0], ConnectionError)
    assert "Traceback" not in capfd.readouterr().err
