"""The event model: DT's JSON body turned into typed, tolerant Python objects.

This module is the envelope; the typed payloads of the 19 event types are in
`core.payloads`, imported on first use of `Event.data` (ingest never needs them, and
defining two dozen dataclasses costs cold-start time). Two levels of strictness, on purpose. The four fields the pipeline depends on
(`eventId`, `eventType`, `targetName`, `timestamp`) are checked and a body without them
is refused with 400. Everything else is optional: a missing or oddly typed field becomes
`None`, never an exception, because an exception here would mean a non-2xx answer and 12
hours of retries for an event we could have stored. Unknown event types keep their raw
`data` dict, so new DT event types flow through untouched.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime
from typing import Any, Optional

from .times import parse_timestamp as _parse_timestamp


class InvalidEvent(ValueError):
    """The body is not a DT event we can process (answered 400). The message is safe to
    return to the caller: it names fields, never echoes their values."""




def _refuse_constant(name: str) -> float:
    raise InvalidEvent(f"body is not valid JSON ({name} is not a JSON number)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no store can hold it
        raise InvalidEvent("body has a number too large to store")
    return value


# RFC 8259 JSON only: Python's default decoder also takes NaN and Infinity, and turns
# 1e400 into inf, none of which a JSON store (Cloudant, Firestore, ...) accepts back, so
# such an event would be acknowledged and then fail in the worker forever.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
# A \uD800-\uDFFF escape: JSON allows a lone one, UTF-8 (every store) cannot hold it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: The deepest nesting of objects and arrays a body may have. DT's bodies nest four
#: levels. Without a fixed bound, what parses would depend on how deep the caller's stack
#: already is (Python's parser, and every serialiser after it, recurse): a body that
#: ingest accepted could raise RecursionError in a worker, or in a store's SDK, on every
#: delivery. With it, every such body is refused the same way everywhere (400, or a
#: poison message in direct mode).
MAX_JSON_DEPTH = 64


def parse_timestamp(value: object) -> tuple[datetime, int]:
    """`core.times.parse_timestamp`, its error an `InvalidEvent` (answered 400)."""
    try:
        return _parse_timestamp(value)
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None


# --- the envelope ------------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    device_id: Optional[str] = None
    project_id: Optional[str] = None
    device_type: Optional[str] = None
    product_number: Optional[str] = None

    @classmethod
    def from_json(cls, raw: dict) -> "Metadata":
        def text(name: str) -> Optional[str]:
            value = raw.get(name)
            return value if isinstance(value, str) else None

        return cls(text("deviceId"), text("projectId"), text("deviceType"), text("productNumber"))


_TARGET = re.compile(r"projects/([^/]+)/devices/([^/]+)")


@dataclass(frozen=True)
class Event:
    """One DT event as handlers see it. `data` is typed for the 19 known event types
    (e.g. `event.data.value` for temperature) and the raw dict for any other type;
    `raw` is the whole body as DT sent it."""

    event_id: str
    event_type: str
    target_name: str
    device_id: str
    project_id: str
    timestamp: datetime
    version: int
    labels: dict
    raw: dict

    @cached_property
    def metadata(self) -> Optional[Metadata]:
        """DT's `metadata` object (added in 2022; None in older bodies)."""
        raw = self.raw.get("metadata")
        return Metadata.from_json(raw) if isinstance(raw, dict) else None

    @cached_property
    def data(self) -> Any:
        """Built on first use (with `core.payloads`): ingest only validates, the worker's
        handlers read `data`."""
        from .payloads import typed_data

        return typed_data(self.event_type, self.raw["event"].get("data"))

    @property
    def is_known_type(self) -> bool:
        from .payloads import EVENT_TYPES

        return self.event_type in EVENT_TYPES


def _refuse_lone_surrogates(doc: object) -> None:
    """A surrogate pair escapes an emoji and is fine; a lone surrogate is text no store or
    queue can encode, so the event could never be stored: refuse it now (400) rather than
    answer 503 for 12 hours or dead-letter it later."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("body contains a lone UTF-16 surrogate escape") from None


def _required_str(event: dict, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"event.{name} is missing or not a non-empty string")
    return value


def body_text(body: bytes) -> str:
    """The body as text. DT sends UTF-8 JSON; anything else is refused rather than guessed."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("body is not UTF-8") from None


def _nested_deeper_than(doc: object, limit: int) -> bool:
    """True if `doc` nests objects/arrays more than `limit` levels; iterative, so it
    cannot itself run out of stack."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _check_depth(doc: object, text: str | None) -> None:
    # Fewer brackets than the limit cannot nest deeper than it: DT's bodies skip the walk.
    if isinstance(doc, (dict, list)) and (text is None or text.count("{") + text.count("[") > MAX_JSON_DEPTH):
        if _nested_deeper_than(doc, MAX_JSON_DEPTH):
            raise InvalidEvent(f"body is nested more than {MAX_JSON_DEPTH} levels deep")


def load_json(text: str) -> object:
    """Decode one JSON text as every store downstream can keep it, or raise `InvalidEvent`.

    Strict RFC 8259 (no NaN/Infinity, no number too large for a double, no integer over
    Python's 4300-digit limit), no lone UTF-16 surrogate escape, at most `MAX_JSON_DEPTH`
    levels deep. Duplicate member names are allowed, the last one wins (as in most
    parsers): every step here parses with this function, so ingest, the queue and the
    worker all read the same value. Any root is returned; `parse_event` needs an object.
    """
    try:
        doc = _JSON.decode(text)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent(f"body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError:  # JSONDecodeError, and int() past its digit limit
        raise InvalidEvent("body is not valid JSON") from None
    _check_depth(doc, text)
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(doc)
    return doc


def parse_event(body: bytes | str | dict) -> Event:
    """Parse a DT request body (raw bytes, text, or an already decoded dict).

    Raises `InvalidEvent` (400) and nothing else.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body_text(bytes(body))
    if isinstance(body, dict):
        doc = body
        _check_depth(doc, None)
    else:
        doc = load_json(body)
    if not isinstance(doc, dict):
        raise InvalidEvent("body is not a JSON object")
    event = doc.get("event")
    if not isinstance(event, dict):
        raise InvalidEvent("body has no 'event' object")
    event_id = _required_str(event, "eventId")
    event_type = _required_str(event, "eventType")
    target = _required_str(event, "targetName")
    timestamp, version = parse_timestamp(_required_str(event, "timestamp"))

    # targetName is authoritative; metadata (added in 2022) fills in for odd targets.
    m = _TARGET.fullmatch(target)
    if m:
        project_id, device_id = m.groups()
    else:
        meta = doc.get("metadata")
        meta = Metadata.from_json(meta) if isinstance(meta, dict) else Metadata()
        device_id, project_id = meta.device_id or target, meta.project_id or ""
    labels = doc.get("labels")
    labels = labels if isinstance(labels, dict) else {}
    return Event(
        event_id=event_id,
        event_type=event_type,
        target_name=target,
        device_id=device_id,
        project_id=project_id,
        timestamp=timestamp,
        version=version,
        labels=labels,
        raw=doc,
    )
