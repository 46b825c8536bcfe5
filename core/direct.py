"""Direct delivery: DT publishes into the cloud's own queue and the worker reads it there.

With a native Data Connector (`AWS_SQS`, `GOOGLE_CLOUD_PUBSUB`, `AZURE_SERVICE_BUS`,
`AZURE_EVENT_HUB`) there is no ingest step: no signature to check, no ingest claim. The
worker's own ledger is then the only dedup, and the queued message is whatever DT wrote.

DT does not publish that message format in any material we have, so this module is the ONE
place that guesses it. `decode_direct_message` takes what a queue hands the worker and
returns the body core already knows (the HTTP-push JSON: ``event``, ``labels``,
``metadata``), or raises `NotADtEvent` with a reason. Accepted shapes (tests/core/
test_direct.py holds the table; change both when DT's real format is known):

- the HTTP-push body ``{"event": {...}, "labels": {...}, "metadata": {...}}``, as is;
- the bare event object ``{"eventId": ..., "eventType": ..., "targetName": ..., ...}``,
  wrapped as ``{"event": <it>, "labels": {}}``;
- either one as bytes or text, base64-encoded or not (SQS body, Service Bus / Event Hub
  body, Pub/Sub ``data``);
- a Pub/Sub message ``{"data": "<base64>", ...}`` or push envelope
  ``{"message": {"data": "<base64>", ...}, "subscription": ...}``;
- a JSON string holding any of the above (a double-encoded body).

Only the envelope is decided here; `core.events.parse_event` still checks the event
itself, so both failures reach the worker's dead-letter path with a reason in the log.
Every JSON text is read with `core.events.load_json`, ingest's own strict parser, so a
message is refused for exactly what an HTTP body is refused for (nesting past
`MAX_JSON_DEPTH`, NaN, numbers no store holds, lone surrogates), and a decoded body
longer than ``DT_MAX_BODY_BYTES`` is refused as HTTP ingest answers 413.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

from .events import InvalidEvent, load_json

#: Fields whose presence makes an object a bare DT event rather than an envelope.
_EVENT_FIELDS = ("eventId", "eventType", "targetName")
#: Unwrapping levels allowed (base64 of a Pub/Sub envelope of base64 is 3): a bound, so
#: a crafted message cannot make us recurse without end.
_MAX_DEPTH = 4


class NotADtEvent(InvalidEvent):
    """The queued message is not a DT event in any shape we accept: dead-letter it."""


def decode_direct_message(
    raw: bytes | bytearray | memoryview | str | Mapping[str, Any], max_bytes: int | None = None
) -> bytes:
    """The HTTP-push body (UTF-8 JSON bytes) carried by one directly delivered message.

    A push body given as bytes is returned byte for byte; other shapes are re-serialised.
    Raises `NotADtEvent` (a core `InvalidEvent`) with a reason that never quotes the input,
    also when the body is longer than `max_bytes` (the worker passes ``DT_MAX_BODY_BYTES``).
    """
    body = _decode(raw, _MAX_DEPTH)
    if max_bytes is not None and len(body) > max_bytes:
        raise NotADtEvent(f"message body is {len(body)} bytes, over DT_MAX_BODY_BYTES ({max_bytes})")
    return body


def _decode(raw: object, depth: int) -> bytes:
    if depth <= 0:
        raise NotADtEvent("message is wrapped too many times")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        original = bytes(raw)
        try:
            text = original.decode("utf-8")
        except UnicodeDecodeError:
            raise NotADtEvent("message body is not UTF-8") from None
        return _from_text(text, depth, original)
    if isinstance(raw, str):
        return _from_text(raw, depth, None)
    if isinstance(raw, Mapping):
        return _from_object(raw, depth)
    raise NotADtEvent(f"message body is a {type(raw).__name__}, not bytes, text or an object")


def _from_text(text: str, depth: int, original: bytes | None) -> bytes:
    stripped = text.strip()
    if not stripped:
        raise NotADtEvent("message body is empty")
    if stripped[0] in '{["':
        try:
            doc = load_json(stripped)
        except InvalidEvent as exc:  # "body is not valid JSON", "... nested more than ..."
            raise NotADtEvent(f"message {exc}") from None
        if isinstance(doc, str):
            return _decode(doc, depth - 1)
        if not isinstance(doc, dict):
            raise NotADtEvent("message body is JSON but not an object")
        if isinstance(doc.get("event"), dict):
            # The push body: hand over the exact bytes, as ingest would have queued them.
            return original if original is not None else text.encode("utf-8", "surrogatepass")
        return _from_object(doc, depth)
    return _decode(_unbase64(stripped), depth - 1)


def _from_object(doc: Mapping[str, Any], depth: int) -> bytes:
    if isinstance(doc.get("event"), dict):
        return _dumps(doc)
    if all(name in doc for name in _EVENT_FIELDS):
        return _dumps({"event": dict(doc), "labels": {}})
    message = doc.get("message")
    if isinstance(message, Mapping) and "data" in message:
        return _decode(_pubsub_data(message), depth - 1)
    if "data" in doc and isinstance(doc["data"], str):
        return _decode(_pubsub_data(doc), depth - 1)
    raise NotADtEvent("message is a JSON object with neither a DT 'event' nor an event's eventId/eventType/targetName")


def _pubsub_data(message: Mapping[str, Any]) -> bytes:
    data = message.get("data")
    if not isinstance(data, str):
        raise NotADtEvent("Pub/Sub message 'data' is not a base64 string")
    return _unbase64(data.strip())


def _unbase64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NotADtEvent("message body is neither JSON nor base64") from None


def _dumps(doc: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8", "surrogatepass"
        )
    except (TypeError, ValueError):
        raise NotADtEvent("message holds a value JSON cannot carry") from None
