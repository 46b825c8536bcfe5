"""The baseline receiver: DT's docs' Flask example shape (verify the signature, decode the
body, answer 200), under the same `ReceiverServer` as `dtconnector serve`, no storage.

    DT_SIGNATURE_SECRET=... python -m bench.verify_server [--port 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from core.config import Secret
from core.http import Request, Response
from core.signature import SecretVerifier, SignatureError, signature_token
from local_receiver.server import ReceiverServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    verifier = SecretVerifier([Secret(os.environ["DT_SIGNATURE_SECRET"])], 60.0)

    def handle(request: Request) -> Response:
        try:
            verifier.verify(signature_token(request.headers), request.body)
        except SignatureError as exc:
            return Response(401, {"error": "unauthorized", "reason": exc.reason})
        event = json.loads(request.body)
        return Response(200, {"status": "ok", "eventId": event["event"]["eventId"]})

    server = ReceiverServer((args.host, args.port), handle, lambda: {"status": "ok", "queued": 0}, 256 * 1024)
    print(f"verify-only receiver at {server.url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
