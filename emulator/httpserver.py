"""The stand-ins' HTTP server: the standard library's threading server, quiet about clients
that hang up (a receiver timing out, a test cutting a connection) instead of printing a
traceback into the test run's output as if something had failed."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, broken pipe, aborted
            return
        super().handle_error(request, client_address)
