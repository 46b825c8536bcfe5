"""A stand-in for DT's key server: serves an OpenID discovery document and a JWKS on loopback,
so `DT-Asymmetric-Signature` can be verified end to end without DT.

    python -m emulator.jwks --generate key.pem          # make a P-256 key (once)
    python -m emulator.jwks --key key.pem [--port 8765]  # serve its public half

prints the `DT_JWKS_ISSUER=...` to give the receiver, and the `kid` to sign with
(`dtconnector send --asymmetric-key key.pem --issuer <that URL>`). From Python::

    with JwksServer([(kid, pem)]) as server:
        settings = Settings.from_env({"DT_JWKS_ISSUER": server.issuer, ...})
        ... sign_asymmetric(body, pem, kid, issuer=server.issuer) ...

The issuer is ``http://127.0.0.1:<port>/data-connector`` (DT's own ends in
``/data-connector`` too); discovery at ``<issuer>/.well-known/openid-configuration``,
keys at ``<issuer>/keys``. `set_keys` swaps the published keys (rotation), `delay_s`
makes every answer slow, and the counters say how often each document was fetched.
Needs `cryptography` (the `asymmetric` extra).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterable, Union

from emulator.httpserver import QuietThreadingHTTPServer

ISSUER_PATH = "/data-connector"
DISCOVERY_PATH = ISSUER_PATH + "/.well-known/openid-configuration"
JWKS_PATH = ISSUER_PATH + "/keys"

Pem = Union[bytes, str]


def generate_private_key_pem() -> bytes:
    """A new EC P-256 private key, PEM (PKCS#8, unencrypted): for tests and local use only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: Pem):
    """The EC P-256 private key object of `pem`, to sign many tokens without re-parsing it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the key must be an EC P-256 (secp256r1) private key")
    return key


def _public_key(pem: Pem):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the key must be an EC P-256 (secp256r1) key")
    return key


def public_key_pem(pem: Pem) -> bytes:
    """The public half, PEM, of a private (or public) key PEM."""
    from cryptography.hazmat.primitives import serialization

    return _public_key(pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(pem: Pem, kid: str | None = None) -> dict:
    """The JWK (RFC 7517) of the public half of `pem`; `kid` defaults to `key_id(pem)`."""
    numbers = _public_key(pem).public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y)}
    return {**jwk, "kid": kid or _thumbprint(jwk), "use": "sig", "alg": "ES256"}


def _thumbprint(jwk: dict) -> str:
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def key_id(pem: Pem) -> str:
    """The default `kid` of a key: its RFC 7638 thumbprint, so signer and server agree
    without being told."""
    return _thumbprint(public_jwk(pem, kid="-"))


class JwksServer:
    """Serves the discovery document and the JWKS of `keys` ((kid, pem) pairs or JWK dicts)
    on 127.0.0.1, in a daemon thread. `port=0` picks a free port."""

    def __init__(self, keys: Iterable = (), host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.discovery_requests = 0
        self.jwks_requests = 0
        self._jwks: dict = {"keys": []}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.set_keys(keys)
        self._httpd = QuietThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.block_on_close = False  # a request held by delay_s must not block stop()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url + ISSUER_PATH

    def set_keys(self, keys: Iterable) -> None:
        """Publish these keys instead (key rotation)."""
        jwks = []
        for item in keys:
            if isinstance(item, dict):
                jwks.append(dict(item))
            else:
                kid, pem = item
                jwks.append(public_jwk(pem, kid))
        with self._lock:
            self._jwks = {"keys": jwks}

    @property
    def requests(self) -> int:
        return self.discovery_requests + self.jwks_requests

    def start(self) -> "JwksServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in delay_s
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()

    def __enter__(self) -> "JwksServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with server._lock:
                    if path == DISCOVERY_PATH:
                        server.discovery_requests += 1
                        doc = {"issuer": server.issuer, "jwks_uri": server.base_url + JWKS_PATH}
                    elif path == JWKS_PATH:
                        server.jwks_requests += 1
                        doc = server._jwks
                    else:
                        doc = None
                if server.delay_s and server._stopping.wait(server.delay_s):
                    return  # stopping: drop the connection
                if doc is None:
                    self.send_error(404)
                    return
                data = json.dumps(doc).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout)
                    pass

            def log_message(self, format: str, *args) -> None:  # quiet: tests and CLI print their own
                pass

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emulator.jwks",
        description="Serve a DT-like OpenID discovery document and JWKS on loopback for a P-256 key.",
    )
    parser.add_argument("--key", help="PEM file of the EC P-256 key (private or public) to publish")
    parser.add_argument("--kid", help="key id to publish (default: the key's RFC 7638 thumbprint)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--generate", metavar="PEM", help="write a new P-256 private key to PEM and exit")
    args = parser.parse_args(argv)
    if args.generate:
        path = Path(args.generate)
        if path.exists():
            parser.error(f"{path} exists; not overwriting it")
        path.write_bytes(generate_private_key_pem())
        path.chmod(0o600)
        print(f"wrote a new P-256 private key to {path}; serve it with: python -m emulator.jwks --key {path}")
        return 0
    if not args.key:
        parser.error("--key PEM (or --generate PEM) is required")
    pem = Path(args.key).read_bytes()
    kid = args.kid or key_id(pem)
    server = JwksServer([(kid, pem)], port=args.port)
    print(
        f"serving DT-like signing keys (kid {kid})\n"
        f"  receiver:  DT_JWKS_ISSUER={server.issuer} DT_SIGNATURE_MODE=asymmetric\n"
        f"  sender:    dtconnector send --asymmetric-key {args.key} --kid {kid} --issuer {server.issuer} ...\n"
        "Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        server._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
