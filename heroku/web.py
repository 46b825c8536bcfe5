"""The web dyno (Procfile ``web: python -m heroku.web --host 0.0.0.0 --port $PORT``): `heroku.asgi.app` on uvicorn with
header/body deadlines and a bound on connections (`core.serving`).

Heroku's router does not buffer requests for us, so slow or idle clients reach this
process: they hold a cheap socket on the event loop, never a thread, and are cut off at
their deadline. Redis is reached through its asyncio client on the same loop, one script
call claiming and queueing the events that arrived together (`heroku.ingest`); a thread is
used only for a signature whose DT keys must first be fetched. Every answer is counted as
an l2met line on stdout (`heroku.metrics`). Scale with processes (dynos, or several of
this command): they share nothing but Redis.
"""

from __future__ import annotations

import argparse
import os
import sys

from core import logs
from core.config import ConfigError
from core.serving import Limits, bind, serve

from .asgi import app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heroku.web")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    args = parser.parse_args(argv)
    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
    try:
        limits = Limits.from_env()
    except ConfigError as exc:  # names the variable, never a traceback
        print(f"dtconnector web dyno: {exc}", file=sys.stderr)
        return 2
    host, port = args.host, args.port
    sock = bind(host, port)
    print(f"dtconnector web dyno: listening on http://{host}:{port}/", file=sys.stderr, flush=True)
    serve(app, sock, limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
