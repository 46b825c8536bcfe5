"""The floor of any receiver built on our HTTP stack: `dtconnector serve`'s web process with
nothing after the checks. The same `core.serving` (uvicorn, httptools, uvloop and our
connection guards), the same `ReceiverASGI` and `Receiver.admit` (the signature verified, the
event parsed, the ingest metrics recorded), then 202 at once: no claim, no queue, no worker,
no handler. One process:

    python -m bench.verify_only        (prints its URL on stderr)

What it answers per second is more than a receiver that also stores the event durably and
runs its handler can answer on the same machine, whatever its design; section 2 of
BENCHMARKS.md compares the targets with it.
"""

from __future__ import annotations

import sys

from core.asgi import ReceiverASGI
from core.config import Settings
from core.http import Request, Response
from core.receiver import Admitted, Receiver, accepted


class AdmitOnly:
    """`core.asgi.Ingest` that accepts whatever `Receiver.admit` lets through, storing nothing."""

    def __init__(self, receiver: Receiver):
        self.receiver = receiver
        self.max_body_bytes = receiver.settings.max_body_bytes

    def admit(self, request: Request, *, may_fetch_keys: bool = True) -> "Response | Admitted":
        return self.receiver.admit(request, may_fetch_keys=may_fetch_keys)

    async def accept(self, admitted: Admitted) -> Response:
        return accepted(admitted.event_id, logged=False)

    def record(self, response: Response, started: float) -> None:
        self.receiver.record_quietly(response, started)


async def _health() -> dict:
    return {"status": "ok"}


def main() -> None:
    from core.serving import Limits, bind, serve
    from local_receiver.metrics import PrometheusRecorder

    receiver = Receiver(Settings.from_env(), None, None, metrics=PrometheusRecorder())  # type: ignore[arg-type]
    sock = bind("127.0.0.1", 0)
    print(f"serving at http://127.0.0.1:{sock.getsockname()[1]}/", file=sys.stderr, flush=True)
    serve(ReceiverASGI(AdmitOnly(receiver), _health), sock, Limits())


if __name__ == "__main__":
    main()
