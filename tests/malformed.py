"""Bodies that can never become an event, each with the reason core gives for refusing it.

One catalogue for every suite that checks them: HTTP ingest answers each 400 with this
reason (tests/contract/test_bad_input.py, every platform), direct mode dead-letters each
as a poison message (tests/contract/test_direct_delivery.py), and the fuzz campaign draws
from the same shapes (tests/reliability/test_hostile.py).
"""

from __future__ import annotations

import json

from core.events import MAX_JSON_DEPTH

ENVELOPE = (
    '{"event":{"eventId":"%s","eventType":"temperature","targetName":"projects/p/devices/d-bad",'
    '"timestamp":"2026-11-22T10:00:00Z","data":{"temperature":{"value":%s}}},"labels":{}}'
)


def with_value(value_json: str, event_id: str = "bad-input") -> bytes:
    """A DT body whose temperature value is the given JSON text, verbatim."""
    return (ENVELOPE % (event_id, value_json)).encode("utf-8")


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


#: Levels the envelope itself takes up to the value (the root, event, data, temperature).
ENVELOPE_LEVELS = 4


# (name, body, the reason's text)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("one level too deep", with_value(nested(MAX_JSON_DEPTH - ENVELOPE_LEVELS + 1)), f"nested more than {MAX_JSON_DEPTH} levels"),
    ("990 levels (parses at a shallow stack only)", with_value(nested(990)), f"nested more than {MAX_JSON_DEPTH} levels"),
    ("20,000 levels", with_value(nested(20_000)), f"nested more than {MAX_JSON_DEPTH} levels"),
    ("objects 5,000 deep", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, f"nested more than {MAX_JSON_DEPTH} levels"),
    ("NaN", with_value("NaN"), "NaN is not a JSON number"),
    ("Infinity", with_value("Infinity"), "Infinity is not a JSON number"),
    ("-Infinity", with_value("-Infinity"), "-Infinity is not a JSON number"),
    ("a float too large for a double", with_value("1e400"), "number too large"),
    ("an integer of 5,000 digits", with_value("9" * 5_000), "not valid JSON"),
    ("a lone surrogate escape", with_value('"\\ud800"'), "lone UTF-16 surrogate"),
    ("a lone low surrogate in a label", with_value("1").replace(b'"labels":{}', b'"labels":{"x":"\\udfff"}'), "lone UTF-16 surrogate"),
    ("not UTF-8", with_value('"\xe9"').decode("utf-8").encode("latin-1"), "not UTF-8"),
    ("empty", b"", "not valid JSON"),
    ("truncated", with_value("1")[:-3], "not valid JSON"),
    ("two documents", with_value("1") + with_value("1"), "not valid JSON"),
    ("root is an array", b"[" + with_value("1") + b"]", "not a JSON object"),
    ("root is a string", json.dumps(with_value("1").decode()).encode(), "not a JSON object"),
    ("root is a number", b"42", "not a JSON object"),
    ("root is null", b"null", "not a JSON object"),
    ("root is true", b"true", "not a JSON object"),
]

#: Valid JSON that looks hostile but is an event: accepted and processed on every platform.
#: (name, body, the value the handler finds at ``event.raw["event"]["data"]["temperature"]["value"]``)
ACCEPTED_ODDITIES: list[tuple[str, bytes, object]] = [
    (
        "exactly the deepest nesting allowed",
        with_value(nested(MAX_JSON_DEPTH - ENVELOPE_LEVELS), "deepest-ok"),
        json.loads(nested(MAX_JSON_DEPTH - ENVELOPE_LEVELS)),
    ),
    ("an integer of 400 digits, kept exactly", with_value("1" + "0" * 400, "big-int"), 10**400),
    ("a float underflowing to zero", with_value("1e-400", "tiny-float"), 0.0),
    ("an escaped surrogate pair (an emoji)", with_value('"\\ud83d\\ude00"', "emoji"), "\U0001F600"),
]
