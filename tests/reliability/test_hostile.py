"""Hostile input against every platform's entry point (through `Harness.deliver`).

Properties (hypothesis): whatever the headers and body, the entry point answers (never an
escaping exception), the status is one core defines, a request without a valid signature
is never accepted, and bad input never gets a 5xx. Then the classic JWT attacks, bodies
that are deep, huge or not UTF-8, and event ids full of characters that stores reserve.

`DT_FUZZ_EXAMPLES` sets the examples per property (default 25; `make fuzz` runs 10,000).
Set `CI=1` for a derandomized (reproducible) campaign.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import on
from core.events import MAX_JSON_DEPTH
from emulator.signing import sign
from reliability.inproc import event_id, state_snapshot
from reliability.workload import body as event_json
from tests.dt import SECRET, event_body, signed

STATUSES = {200, 202, 400, 401, 405, 413, 503}
EXAMPLES = int(os.environ.get("DT_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=list(HealthCheck),
)

# --- strategies ------------------------------------------------------------------------

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Headers an HTTP front end computes or strips itself: a client cannot choose them freely.
_FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "te", "upgrade", "trailer"}
header_names = st.one_of(
    st.sampled_from(
        ["X-Dt-Signature", "x-dt-signature", "X-DT-SIGNATURE", "DT-Asymmetric-Signature", "Content-Type",
         "User-Agent", "Authorization", "X-Api-Key", "Accept", "Content-Encoding"]
    ),
    st.text(_TCHAR, min_size=1, max_size=30),
).filter(lambda n: n.lower() not in _FRAMING)
# What HTTP allows in a field value: visible ASCII, space, tab and obs-text (no CR/LF/NUL).
header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300),
    st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,60}", fullmatch=True),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20,
)
TEMPLATE = json.loads(event_body("temperature"))
# Any date and time of RFC 3339's shape, impossible ones and years 0000-9999 with offsets
# included (an offset carrying past year 9999 once escaped as an OverflowError).
rfc3339_shaped = st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})", fullmatch=True)


@st.composite
def event_docs(draw):
    """DT-shaped documents with any field replaced, dropped, or oddly typed."""
    doc = json.loads(json.dumps(TEMPLATE))
    doc["event"]["eventId"] = draw(st.one_of(st.text(min_size=1, max_size=60), json_values))
    for field in ("eventType", "targetName", "timestamp", "data"):
        if draw(st.booleans()):
            doc["event"][field] = draw(
                st.one_of(
                    json_values,
                    st.sampled_from(["touch", "co2", "labelsChanged", "projects/p/devices/d", "2026-02-30T25:00:00Z",
                                     "2026-11-22T10:00:00.123456789+05:30", "2026-11-22T10:00:00Z"]),
                    rfc3339_shaped,
                )
            )
    for section in ("labels", "metadata"):
        if draw(st.booleans()):
            doc[section] = draw(json_values)
    if draw(st.booleans()):
        doc[draw(st.text(max_size=10))] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        del doc["event"][draw(st.sampled_from(sorted(doc["event"])))]
    return doc


def encoded(doc) -> st.SearchStrategy[bytes]:
    return st.sampled_from([True, False]).map(lambda ascii_: json.dumps(doc, ensure_ascii=ascii_).encode("utf-8", "surrogatepass"))


bodies = st.one_of(
    st.binary(max_size=600),
    event_docs().flatmap(encoded),
    json_values.map(lambda v: json.dumps(v).encode()),
)


def check_answer(reply) -> int:
    assert reply.status in STATUSES, f"status {reply.status} is not one core defines"
    return reply.status


# --- properties ------------------------------------------------------------------------


def test_fuzz_unsigned_or_forged_requests_are_never_accepted(platform):
    @FUZZ
    @given(body=bodies, hdrs=headers, path=st.sampled_from(["/", "/api/dt", "/%2e%2e/x", "/" + "a" * 300]))
    def run(body, hdrs, path):
        status = check_answer(platform.deliver(body, hdrs, "POST", path))
        assert status in {400, 401, 413}, f"forged request answered {status}"

    run()
    assert platform.queue_depth() == 0


def test_fuzz_signed_bodies_never_get_5xx_and_accepted_ones_are_processed(platform):
    read = []

    @on("*")
    def read_everything(event):  # what a user's handler touches
        read.append((event.event_id, repr(event.data), event.metadata, event.labels, event.is_known_type))

    accepted: set[str] = set()

    @FUZZ
    @given(body=bodies, extra=headers)
    def run(body, extra):
        hdrs = [(k, v) for k, v in extra if k.lower() not in ("x-dt-signature", "dt-asymmetric-signature")]
        status = check_answer(platform.deliver(body, [*hdrs, ("X-Dt-Signature", sign(body, SECRET))]))
        assert status in {200, 202, 400, 413}, f"signed body answered {status}"
        if status == 202:
            accepted.add(json.loads(body)["event"]["eventId"])

    run()
    platform.drain()
    assert platform.dead_letters() == []
    assert {r[0] for r in read} == accepted


def test_fuzz_methods_other_than_post_get_405(platform, stand_in):
    @FUZZ
    @given(method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "HEAD", "get", "Post ", "BREW", "TRACE"]), body=st.binary(max_size=50))
    def run(method, body):
        status = platform.deliver(body, signed(body), method).status
        if stand_in.name == "azure" and method not in ("GET", "PUT", "PATCH", "DELETE", "HEAD", "get"):
            # The Functions host routes only the standard methods: others get its own 404
            # and never reach our code.
            assert status in (404, 405)
        elif stand_in.name == "heroku" and method in ("get", "Post ", "BREW"):
            # Over real HTTP, the web dyno's parser (llhttp) refuses a method that is not an
            # upper-case token it knows before our code runs.
            assert status == 400
        else:
            assert status == 405

    run()
    assert platform.queue_depth() == 0


def test_options_is_405_not_an_acknowledgement(platform):
    body = event_body()
    assert platform.deliver(body, signed(body), "OPTIONS").status == 405


# --- JWT attacks -------------------------------------------------------------------------


def _claims(body: bytes) -> dict:
    now = int(time.time())
    return {"checksum_sha256": hashlib.sha256(body).hexdigest(), "checksum": hashlib.sha1(body).hexdigest(),
            "iat": now, "exp": now + 3600, "jti": "x"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rsa_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public


def forged_tokens(body: bytes) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    claims = _claims(body)
    private, public_pem = _rsa_pair()
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return {
        "alg none": unsigned + ".",
        "alg none, signature kept": unsigned + "." + sign(body, SECRET).split(".")[2],
        "alg NONE": _b64(b'{"alg":"NONE"}') + "." + _b64(json.dumps(claims).encode()) + ".",
        "RS256 with attacker key": jwt.encode(claims, private, algorithm="RS256"),
        # PyJWT itself refuses to HMAC with a PEM key; an attacker does it by hand.
        "HS256 keyed with an RSA public key": _hs256_raw(claims, public_pem),
        "ES256 with attacker key": jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "HS512 with the right secret": jwt.encode(claims, SECRET, algorithm="HS512"),
        "HS256 with an empty secret": _hs256_raw(claims, b""),
        "right secret, header says RS256": _hs256_raw(claims, SECRET.encode(), alg="RS256"),
        "no exp": sign(body, SECRET, exp=None),
        "expired": sign(body, SECRET, iat=int(time.time()) - 7200),
        "issued in the future": sign(body, SECRET, iat=int(time.time()) + 3600),
        "no checksum": sign(body, SECRET, checksum=None, checksum_sha256=None),
        "sha256 wrong, sha1 right": sign(body, SECRET, checksum_sha256="0" * 64),
        "checksum not a string": sign(body, SECRET, checksum_sha256=12345),
        "exp not a number": sign(body, SECRET, exp="never"),
        "two tokens": f"{sign(body, SECRET)},{sign(body, SECRET)}",
        "garbage": "not.a.jwt",
        "empty segments": "..",
        "bad base64": "!!!.@@@.###",
    }


def _hs256_raw(claims: dict, key: bytes, alg: str = "HS256") -> str:
    import hmac

    signing_input = f"{_b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def test_forged_and_confused_tokens_are_refused(platform):
    body = event_body()
    outcomes = {name: platform.deliver(body, {"X-Dt-Signature": token}).status for name, token in forged_tokens(body).items()}
    assert outcomes == {name: 401 for name in outcomes}
    # The same forgeries in the asymmetric header are refused before any key is fetched.
    for name in ("alg none", "HS256 keyed with an RSA public key", "HS512 with the right secret"):
        token = forged_tokens(body)[name]
        assert platform.deliver(body, {"DT-Asymmetric-Signature": token}).status == 401
    assert platform.queue_depth() == 0


def test_token_replayed_with_another_body_is_refused(platform):
    original, other = event_body(), event_body()
    token = signed(original)
    assert platform.deliver(original, token).status == 202
    assert platform.deliver(other, token).status == 401
    assert platform.deliver(original + b" ", token).status == 401
    assert platform.queue_depth() == 1


OLD_SECRET = "the-previous-secret-0123456789abcdefgh"
NEW_SECRET = "the-current-secret-0123456789abcdefghi"


def test_previous_secret_is_accepted_while_rotating(make_platform):
    platform = make_platform(DT_SIGNATURE_SECRET=NEW_SECRET, DT_SIGNATURE_SECRET_PREVIOUS=OLD_SECRET)
    body = event_body()
    assert platform.deliver(body, signed(body, OLD_SECRET)).status == 202


def test_previous_secret_is_refused_once_rotation_ended(make_platform):
    platform = make_platform(DT_SIGNATURE_SECRET=NEW_SECRET)
    body = event_body()
    assert platform.deliver(body, signed(body, OLD_SECRET)).status == 401
    assert platform.deliver(body, signed(body, NEW_SECRET)).status == 202


def test_huge_token_is_refused_without_5xx(platform, stand_in):
    body = event_body()
    real = sign(body, SECRET)
    # Over real HTTP, the web dyno refuses a head over 64 KiB before reading the token (431).
    expected = 431 if stand_in.name == "heroku" else 401
    for token in ("a" * 1_000_000, real + "A" * 1_000_000, real.split(".")[0] + "." + "A" * 1_000_000 + ".x"):
        assert platform.deliver(body, {"X-Dt-Signature": token}).status == expected
    assert platform.queue_depth() == 0


# --- bodies ------------------------------------------------------------------------------


def test_deeply_nested_json_is_400_not_a_crash(platform):
    doc = json.loads(event_body())
    nested = json.dumps({**doc, "event": {**doc["event"], "data": {}}})[:-2] + '"x":' + "[" * 15_000 + "]" * 15_000 + "}}"
    for body in (b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 8_000 + b"1" + b"}" * 8_000, nested.encode()):
        assert platform.deliver(body, signed(body)).status == 400


def test_nesting_up_to_the_limit_is_processed_and_one_more_level_is_400(platform, seen):
    """Nesting is bounded at a fixed depth (core.events.MAX_JSON_DEPTH), not by whatever
    stack the platform has left: the deepest allowed body is processed everywhere, one
    level more is 400 everywhere (a body ingest once accepted at 900 levels then raised
    RecursionError in the IBM worker on every delivery)."""
    from tests.malformed import ENVELOPE_LEVELS, nested, with_value

    deepest = with_value(nested(MAX_JSON_DEPTH - ENVELOPE_LEVELS), "deepest")
    assert platform.deliver(deepest, signed(deepest)).status == 202
    for levels in (MAX_JSON_DEPTH - ENVELOPE_LEVELS + 1, 400, 900, 990):
        body = with_value(nested(levels), f"deep-{levels}")
        assert platform.deliver(body, signed(body)).status == 400
    platform.drain()
    assert [e.event_id for e in seen] == ["deepest"]
    assert platform.dead_letters() == [] and platform.queue_depth() == 0


_POISON_VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", '"\\ud800"', '"a\\udc00"', "9" * 4301]


def test_fuzz_nesting_and_values_no_store_holds_are_400_at_any_depth(platform):
    """Any nesting depth, of arrays or objects, optionally holding a value no store can keep:
    400 exactly when the body nests past MAX_JSON_DEPTH or holds such a value, else 202."""
    from tests.malformed import ENVELOPE_LEVELS, with_value

    accepted: set[str] = set()

    @FUZZ
    @given(
        levels=st.integers(0, 1200),
        objects=st.booleans(),
        poison=st.one_of(st.none(), st.sampled_from(_POISON_VALUES)),
        n=st.integers(0, 10**9),
    )
    def run(levels, objects, poison, n):
        leaf = poison or "1"
        value = ('{"a":' * levels + leaf + "}" * levels) if objects else ("[" * levels + leaf + "]" * levels)
        event_id_ = f"fuzz-depth-{n}-{levels}"
        body = with_value(value, event_id_)
        expected = 400 if poison is not None or ENVELOPE_LEVELS + levels > MAX_JSON_DEPTH else 202
        if expected == 202 and event_id_ in accepted:
            expected = 200  # hypothesis drew the same event again: a duplicate
        status = platform.deliver(body, signed(body)).status
        assert status == expected, f"{levels} levels, leaf {leaf[:12]}: {status}"
        if status == 202:
            accepted.add(event_id_)

    run()
    platform.drain()
    assert platform.dead_letters() == []


def _big_event(size: int) -> bytes:
    doc = json.loads(event_body("temperature", device=f"d-big-{size}"))
    base = len(json.dumps(doc).encode())
    sample = {"value": 1.5, "sampleTime": "x" * 90}
    doc["event"]["data"]["temperature"]["samples"] = [sample] * ((size - base - 20) // (len(json.dumps(sample)) + 2))
    return json.dumps(doc).encode()


def test_large_valid_event_within_the_limit_is_accepted_and_processed(platform):
    """The biggest event the platform's limit allows (256 KiB by default; a platform with
    a smaller queue message names its limit in the 413) is accepted and handled."""
    body = _big_event(250_000)
    reply = platform.deliver(body, signed(body))
    if reply.status == 413:
        limit = reply.json["limit"]
        assert 16 * 1024 <= limit < len(body)
        body = _big_event(limit - 200)
        assert limit - 400 <= len(body) <= limit
        reply = platform.deliver(body, signed(body))
    seen = []

    @on("*")
    def handler(event):
        seen.append(event.event_id)

    assert reply.status == 202
    platform.drain()
    assert seen == [event_id(body)], f"a {len(body)}-byte event was accepted but never handled (dead letters: {platform.dead_letters()})"


def test_body_over_the_limit_is_413(platform):
    body = b'{"event":{"eventId":"' + b"x" * (300 * 1024) + b'"}}'
    assert platform.deliver(body, signed(body)).status == 413


def test_non_utf8_bodies_are_400(platform):
    for body in (b'{"event":{"eventId":"\xff\xfe"}}', "é".encode("latin-1") + event_body(), b"\xed\xa0\x80", event_body().decode().encode("utf-16")):
        assert platform.deliver(body, signed(body)).status == 400


# --- event ids as store keys -------------------------------------------------------------

SPECIAL_IDS = [
    "a/b", "a\\b", "a#b", "a?b", "/", "\\", "#", "?", "..", ".", "_id", "__name__", "_design/x",
    "a\tb", "a\nb", "\x00", "\x01\x1f\x7f", "id with spaces", "%2F", "'; DROP TABLE events; --",
    "x" * 5000, "y" * 128, "y" * 129, "😀", "e\u0301", "\u00e9",
    "ABC", "abc", "h_" + "0" * 64, "w_abc", "abc-", "-", "\u202e", "\ufeff",
    "null", "true", "undefined", "NaN", "0",  # words a JavaScript store might read as values
]


def test_event_ids_special_in_store_keys_are_accepted_processed_and_never_collide(platform):
    """Each id is its own event: accepted once (202), a duplicate after (200), handled
    once, its state stored under the id DT sent, even ids that differ only by case,
    normalisation, a hashed-looking prefix or a lone surrogate (sent as a \\ud800 escape)."""
    handled: list[str] = []

    @on("*")
    def record(event):
        handled.append(event.event_id)

    devices = {}
    for i, event_id_ in enumerate(SPECIAL_IDS):
        device = f"d-key-{i}"
        devices[event_id_] = device
        body = json.loads(event_json("x", device, "touch", 1_795_341_600_000_000_000 + i))
        body["event"]["eventId"] = event_id_
        raw = json.dumps(body).encode()  # ensure_ascii: control chars and surrogates as \u escapes
        reply = platform.deliver(raw, signed(raw))
        assert reply.status == 202, f"eventId {event_id_!r}: {reply.status} {reply.body[:200]}"
    for event_id_, device in devices.items():
        body = json.loads(event_json("x", device, "touch", 1_795_341_600_000_000_000 + SPECIAL_IDS.index(event_id_)))
        body["event"]["eventId"] = event_id_
        raw = json.dumps(body).encode()
        assert platform.deliver(raw, signed(raw)).status == 200, f"eventId {event_id_!r} was not deduplicated"
    platform.drain()
    assert platform.dead_letters() == []
    assert sorted(handled) == sorted(SPECIAL_IDS)
    state = state_snapshot(platform, devices.values())
    assert state == {(device, "touch"): event_id_ for event_id_, device in devices.items()}


LONE_SURROGATES = ["\ud800", "\udfff\ud800", "a\ud800b"]


def test_lone_surrogate_event_ids_are_refused_with_400(platform, seen):
    """JSON lets a body spell a lone surrogate (\\ud800), which no UTF-8 store, queue or
    SDK can encode: accepting it would mean 503 for 12 hours or a dead letter. Core
    refuses it up front (400) on every platform; an escaped surrogate *pair* (an emoji)
    is fine and is processed."""
    for i, event_id_ in enumerate(LONE_SURROGATES):
        doc = json.loads(event_json("x", f"d-sur-{i}", "touch", 1_795_341_600_000_000_000 + i))
        doc["event"]["eventId"] = event_id_
        raw = json.dumps(doc).encode()
        assert b"\\ud800" in raw
        reply = platform.deliver(raw, signed(raw))
        assert reply.status == 400, f"eventId {event_id_!r}: {reply.status}"
        assert "surrogate" in reply.json["reason"]
    emoji = json.loads(event_json("x", "d-emoji", "touch", 1_795_341_600_000_000_100))
    emoji["event"]["eventId"] = "id-\U0001F600"
    raw = json.dumps(emoji).encode()  # ensure_ascii: the emoji travels as a surrogate pair
    assert b"\\ud83d\\ude00" in raw
    assert platform.deliver(raw, signed(raw)).status == 202
    assert platform.queue_depth() == 1
    platform.drain()
    assert [e.event_id for e in seen] == ["id-\U0001F600"]
    assert platform.dead_letters() == []


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59.999999999Z", "2262-04-11T23:47:16.854775808Z", "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59.999999999Z",
    ],
)
def test_extreme_timestamps_outside_int64_are_400_and_others_processed(platform, seen, timestamp):
    """Valid RFC 3339, but the nanosecond version (the state's version, a signed 64-bit
    integer in every store) is outside int64 after 2262-04-11 or before 1677: 400. Other
    old or negative versions (1969) are processed like any event."""
    body = event_body("co2", device="d-time", timestamp=timestamp, data={"co2": {"ppm": 1}})
    outside_int64 = not timestamp.startswith("1969")
    reply = platform.deliver(body, signed(body))
    if outside_int64:
        assert reply.status == 400 and "timestamp" in reply.json["reason"]
        assert platform.queue_depth() == 0
        return
    assert reply.status == 202
    platform.drain()
    assert platform.dead_letters() == [] and platform.queue_depth() == 0
    assert [e.event_id for e in seen] == [event_id(body)]
    assert platform.device_state("d-time")["co2"].timestamp == timestamp


def test_fuzz_event_ids_never_collide(platform):
    sent: dict[str, int] = {}

    @FUZZ
    @given(event_ids=st.lists(st.text(min_size=1, max_size=300).filter(str.strip), min_size=1, max_size=4, unique=True))
    def run(event_ids):
        for event_id_ in event_ids:
            first = event_id_ not in sent
            sent.setdefault(event_id_, len(sent))
            raw = json.loads(event_json("x", "d-fuzz-keys", "touch", 1_795_341_600_000_000_000 + sent[event_id_]))
            raw["event"]["eventId"] = event_id_
            data = json.dumps(raw).encode()
            status = platform.deliver(data, signed(data)).status
            assert status == (202 if first else 200), f"eventId {event_id_!r}: {status}"

    run()
    assert platform.queue_depth() == len(sent)
