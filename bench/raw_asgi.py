"""uvicorn's raw ceiling on this machine: an ASGI app that reads the body and answers 202,
nothing else (no verification, no storage). One process, httptools, uvloop:

    python -m bench.raw_asgi        (prints its URL on stderr)
"""

from __future__ import annotations

import sys


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    import asyncio
    import socket

    import uvicorn
    import uvloop

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"serving at http://127.0.0.1:{sock.getsockname()[1]}/", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, http="httptools", lifespan="off", access_log=False, log_level="warning",
                            date_header=False, server_header=False)
    # sockets=, not fd=: uvicorn wraps an fd as a Unix socket, so TCP_NODELAY would be
    # left off and each answer would wait for a delayed ACK.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
