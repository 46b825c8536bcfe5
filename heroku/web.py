"""The web dyno (Procfile ``web: python -m heroku.web --host 0.0.0.0 --port $PORT``): `heroku.asgi.app` on uvicorn with
header/body deadlines and a bound on connections (`core.serving`).

Heroku's router does not buffer requests for us, so slow or idle clients reach this
process: they hold a cheap socket on the event loop, never a thread, and are cut off at
their deadline. Redis is reached through its asyncio client on the same loop, one script
call claiming and queueing the events that arrived together (`heroku.ingest`); a thread is
used only for a signature whose DT keys must first be fetched. Every answer is counted as
an l2met line on stdout (`heroku.metrics`). Scale with processes (dynos, or several of
this command): they share nothing but Redis. ``WEB_CONCURRENCY`` (which Heroku sets
from the dyno's size) starts that many processes on the dyno's one port.
"""

from __future__ import annotations

import argparse
import os
import signal
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
        processes = _processes()
    except ConfigError as exc:  # names the variable, never a traceback
        print(f"dtconnector web dyno: {exc}", file=sys.stderr)
        return 2
    host, port = args.host, args.port
    sock = bind(host, port)
    print(f"dtconnector web dyno: listening on http://{host}:{port}/ ({processes} process{'es' * (processes > 1)})",
          file=sys.stderr, flush=True)
    if processes == 1:
        serve(app, sock, limits)
        return 0
    return _serve_in_processes(sock, limits, processes)


def _processes() -> int:
    """``WEB_CONCURRENCY`` (Heroku's own setting, sized to the dyno), default 1."""
    from core.config import number_setting

    value = number_setting(os.environ, "WEB_CONCURRENCY", 1)
    if value < 1 or value != int(value):
        raise ConfigError("WEB_CONCURRENCY must be a whole number above 0")
    return int(value)


def _serve_in_processes(sock, limits: Limits, processes: int) -> int:
    """`processes` children serving the one listening socket (the kernel hands each
    connection to one of them), so a dyno with several cores uses them: nothing is shared
    between them but Redis. SIGTERM/SIGINT stop them all. A child that dies stops the dyno
    (exit 1) for Heroku to restart it whole, as it would a single process."""
    children: list[int] = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: nothing was built before the fork (no loop, no client)
            code = 0
            try:
                serve(app, sock, limits)
            except BaseException:  # noqa: B036 - the child must never return into the parent's code
                code = 1
            os._exit(code)
        children.append(pid)
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            _signal(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        children.remove(pid)
        if not stopping:
            print(f"dtconnector web dyno: web process {pid} exited ({_describe(code)}); stopping the dyno",
                  file=sys.stderr, flush=True)
            status = 1
            stop(signal.SIGTERM, None)
    return status


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    return f"exit status {os.waitstatus_to_exitcode(wait_status)}"


if __name__ == "__main__":
    sys.exit(main())
