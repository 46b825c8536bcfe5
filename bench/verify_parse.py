"""(1) Verify + parse cost per event: ours vs a stdlib floor vs the obvious PyJWT path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
import warnings

import jwt

from core.config import Secret
from core.events import parse_event
from core.signature import SecretVerifier
from emulator.generate import EventGenerator
from emulator.signing import sign

warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

SECRET = "bench-secret-0123456789abcdef0123456789"


def _b64d(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def stdlib_floor(key: bytes):
    """The least a correct verifier must do, in the standard library: HMAC-SHA256 over
    the token's signing input, decode the claims, check `exp`, SHA-256 of the body,
    and `json.loads` of the body."""

    def run(token: str, body: bytes):
        raw = token.encode("ascii")
        signing_input, _, sig = raw.rpartition(b".")
        mac = hmac.new(key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, _b64d(sig)):
            raise ValueError("bad signature")
        claims = json.loads(_b64d(signing_input.partition(b".")[2]))
        if claims["exp"] < time.time() - 60:
            raise ValueError("expired")
        if not hmac.compare_digest(claims["checksum_sha256"], hashlib.sha256(body).hexdigest()):
            raise ValueError("checksum")
        return json.loads(body)

    return run


def pyjwt_obvious(key: bytes):
    """What most people write: `jwt.decode` + checksum compare + `json.loads`."""

    def run(token: str, body: bytes):
        claims = jwt.decode(token, key, algorithms=["HS256"])
        if not hmac.compare_digest(claims["checksum_sha256"], hashlib.sha256(body).hexdigest()):
            raise ValueError("checksum")
        return json.loads(body)

    return run


def ours(key: bytes):
    verifier = SecretVerifier([Secret(key.decode())], 60.0)

    def run(token: str, body: bytes):
        verifier.verify(token, body)
        return parse_event(body)

    return run


def ours_verify_only(key: bytes):
    verifier = SecretVerifier([Secret(key.decode())], 60.0)
    return verifier.verify


def parse_only(key: bytes):
    return lambda token, body: parse_event(body)


CANDIDATES = [
    ("stdlib floor (hmac + sha256 + json.loads)", stdlib_floor),
    ("PyJWT obvious (jwt.decode + checksum + json.loads)", pyjwt_obvious),
    ("ours (SecretVerifier.verify + parse_event)", ours),
    ("  ours, verify only", ours_verify_only),
    ("  ours, parse_event only", parse_only),
]


def run(quick: bool = False) -> dict:
    key = SECRET.encode()
    events = list(EventGenerator(20, seed=1).events(200))
    cases = [(sign(e.body, SECRET), e.body) for e in events]
    fns = [(name, factory(key)) for name, factory in CANDIDATES]
    for _, fn in fns:  # every candidate accepts every case (and warms up)
        for token, body in cases:
            fn(token, body)
    rounds = 5 if quick else 15
    loops = 2 if quick else 10
    samples: dict[str, list[float]] = {name: [] for name, _ in fns}
    for _ in range(rounds):  # interleaved, so drift hits every candidate alike
        for name, fn in fns:
            start = time.perf_counter()
            for _ in range(loops):
                for token, body in cases:
                    fn(token, body)
            samples[name].append((time.perf_counter() - start) / (loops * len(cases)) * 1e6)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    floor = medians[CANDIDATES[0][0]]
    rows = [(name, round(us, 2), round(us / floor, 2)) for name, us in medians.items()]
    ours_ratio = medians[CANDIDATES[2][0]] / floor
    return {
        "rows": rows,
        "ours_vs_floor": round(ours_ratio, 2),
        "ours_vs_pyjwt": round(medians[CANDIDATES[2][0]] / medians[CANDIDATES[1][0]], 2),
        "target_met": ours_ratio <= 2.0,
        "events": len(cases),
        "rounds": rounds,
        "body_bytes_median": statistics.median(len(b) for _, b in cases),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
