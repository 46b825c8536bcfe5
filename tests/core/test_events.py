"""Parsing: every DT event type, tolerant of missing fields, strict on the four it needs."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from core.events import InvalidEvent, parse_event, parse_timestamp
from core.payloads import EVENT_TYPES
from tests.dt import sample_bodies, signed_sample


def test_reference_lists_nineteen_event_types_and_all_are_modelled():
    assert len(EVENT_TYPES) == 19


@pytest.mark.parametrize("body", sample_bodies(), ids=lambda b: json.loads(b)["event"]["eventType"])
def test_every_sample_parses_into_its_typed_payload(body):
    event = parse_event(body)
    doc = json.loads(body)
    assert event.event_id == doc["event"]["eventId"]
    assert event.is_known_type
    assert isinstance(event.data, EVENT_TYPES[event.event_type])
    assert event.device_id == doc["metadata"]["deviceId"]
    assert event.raw == doc
    if event.event_type != "labelsChanged":
        assert event.data.update_time == event.timestamp


def test_samples_cover_every_modelled_type():
    assert {json.loads(b)["event"]["eventType"] for b in sample_bodies()} == set(EVENT_TYPES)


def test_typed_fields_of_a_few_types():
    by_type = {json.loads(b)["event"]["eventType"]: parse_event(b) for b in sample_bodies()}
    assert by_type["temperature"].data.samples[0].value == 24.9
    assert by_type["humidity"].data.relative_humidity == 17
    assert by_type["networkStatus"].data.cloud_connectors[0].id == "bdkjbo2v0000uk377c4g"
    assert by_type["networkStatus"].data.transmission_mode == "LOW_POWER_STANDARD_MODE"
    assert by_type["deskOccupancy"].data.remarks == ["INCOMPLETE_DATA"]
    assert by_type["labelsChanged"].data.removed == ["old-key"]
    assert by_type["connectionStatus"].data.available == ["CELLULAR", "ETHERNET"]


def test_real_2022_request_parses():
    event = parse_event(signed_sample()["body"])
    assert (event.device_id, event.project_id) == ("emuc17m6d7lq0bgk44smcqg", "c14u9p094l47cdv1o3pg")
    assert event.labels == {"name": "touch"}


def _minimal(event_type="temperature", data=None, **extra):
    doc = {
        "event": {
            "eventId": "e1",
            "targetName": "projects/p/devices/d",
            "eventType": event_type,
            "data": data if data is not None else {},
            "timestamp": "2024-01-01T00:00:00Z",
        },
        **extra,
    }
    return json.dumps(doc)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_missing_optional_fields_never_crash(event_type):
    for data in ({}, {event_type: {}}, {event_type: None}, {event_type: "junk"}, None, [], "x"):
        event = parse_event(_minimal(event_type, data))
        assert isinstance(event.data, EVENT_TYPES[event_type])


def test_wrongly_typed_fields_become_none():
    event = parse_event(
        _minimal("temperature", {"temperature": {"value": "hot", "samples": "x", "isBackfilled": "no", "updateTime": 5}})
    )
    assert (event.data.value, event.data.samples, event.data.is_backfilled, event.data.update_time) == (None, [], None, None)


def test_body_without_metadata_or_labels_from_before_2022():
    event = parse_event(_minimal())
    assert event.metadata is None and event.labels == {}
    assert (event.device_id, event.project_id) == ("d", "p")


def test_unknown_event_type_keeps_raw_data():
    event = parse_event(_minimal("fluxCapacitor", {"fluxCapacitor": {"gigawatts": 1.21}}))
    assert not event.is_known_type
    assert event.data == {"fluxCapacitor": {"gigawatts": 1.21}}


def test_odd_target_name_falls_back_to_metadata():
    doc = json.loads(_minimal(metadata={"deviceId": "meta-dev", "projectId": "meta-proj"}))
    doc["event"]["targetName"] = "organizations/o/things/x"
    event = parse_event(doc)
    assert (event.device_id, event.project_id) == ("meta-dev", "meta-proj")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("event"), "no 'event' object"),
        (lambda d: d["event"].pop("eventId"), "eventId"),
        (lambda d: d["event"].update(eventId=""), "eventId"),
        (lambda d: d["event"].update(eventId=42), "eventId"),
        (lambda d: d["event"].pop("eventType"), "eventType"),
        (lambda d: d["event"].pop("targetName"), "targetName"),
        (lambda d: d["event"].pop("timestamp"), "timestamp"),
        (lambda d: d["event"].update(timestamp="2024-13-45T00:00:00Z"), "timestamp"),
        (lambda d: d["event"].update(timestamp="1700000000"), "timestamp"),
    ],
)
def test_required_fields_are_enforced_with_a_clear_message(mutate, message):
    doc = json.loads(_minimal())
    mutate(doc)
    with pytest.raises(InvalidEvent, match=message):
        parse_event(json.dumps(doc))


@pytest.mark.parametrize("raw", [b"\xff", b"[]", b"null", b"1", b'"s"', b"{", b"[" * 100_000])
def test_non_object_or_broken_json_is_invalid(raw):
    with pytest.raises(InvalidEvent):
        parse_event(raw)


def test_timestamps_keep_nanoseconds_as_the_version():
    dt6, v6 = parse_timestamp("2024-05-29T10:34:03.970415Z")
    dt9, v9 = parse_timestamp("2024-05-29T10:34:03.970415001Z")
    assert dt6 == datetime(2024, 5, 29, 10, 34, 3, 970415, tzinfo=timezone.utc)
    assert v9 - v6 == 1
    assert v6 == int(datetime(2024, 5, 29, 10, 34, 3, tzinfo=timezone.utc).timestamp()) * 10**9 + 970415000


def test_offsets_are_normalised_to_utc():
    assert parse_timestamp("2024-05-29T12:34:03+02:00") == parse_timestamp("2024-05-29T10:34:03Z")
    assert parse_timestamp("2024-05-29T10:34:03.5z")[1] == parse_timestamp("2024-05-29T10:34:03.500000000Z")[1]


@pytest.mark.parametrize("value", ["２０２４-05-29T10:34:03Z", "2024-05-29T10:34:0٣Z", "2024-02-30T10:00:00Z", "2024-05-29T24:00:00Z"])
def test_non_ascii_digits_and_impossible_dates_are_refused(value):
    with pytest.raises(InvalidEvent):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value",
    [
        "2262-04-11T23:47:16.854775808Z",
        "1677-09-21T00:12:43.145224191Z",
        "9999-12-31T23:59:59Z",
        # an offset that would carry past year 9999 or before year 1 (was an OverflowError: 503)
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_timestamps_outside_signed_64_bit_nanoseconds_are_refused(value):
    with pytest.raises(InvalidEvent, match="outside"):
        parse_timestamp(value)


def test_the_edges_of_signed_64_bit_nanoseconds_are_accepted():
    assert parse_timestamp("2262-04-11T23:47:16.854775807Z")[1] == 2**63 - 1
    assert parse_timestamp("1677-09-21T00:12:43.145224192Z")[1] == -(2**63)
    assert parse_timestamp("2262-04-12T00:47:16.854775807+01:00")[1] == 2**63 - 1


def test_an_offset_moves_the_instant_and_the_version_alike():
    dt, version = parse_timestamp("2026-11-22T07:34:05.123456789+02:00")
    assert (dt.isoformat(), version) == ("2026-11-22T05:34:05.123456+00:00", parse_timestamp("2026-11-22T05:34:05.123456789Z")[1])
    dt, _ = parse_timestamp("2026-11-22T05:04:05-00:30")
    assert dt.isoformat() == "2026-11-22T05:34:05+00:00"


def test_lone_surrogate_escapes_are_refused_and_pairs_accepted():
    template = '{"event":{"eventId":"%s","eventType":"t","targetName":"x","timestamp":"2024-01-01T00:00:00Z"}}'
    assert parse_event(template % "a\\ud83d\\ude00").event_id == "a\U0001F600"
    assert parse_event(template % "\\\\ud800").event_id == "\\ud800"  # an escaped backslash, not a surrogate
    for lone in ("\\ud800", "\\uDFFF", "x\\udbff"):
        with pytest.raises(InvalidEvent, match="surrogate"):
            parse_event(template % lone)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_numbers_json_does_not_have_are_refused(number):
    """Python's json takes NaN and Infinity and turns 1e400 into inf; no JSON store takes
    them back, so the event would be acknowledged and then fail in the worker forever."""
    body = '{"event":{"eventId":"n1","eventType":"co2","targetName":"projects/p/devices/d",' \
           '"timestamp":"2024-01-01T00:00:00Z","data":{"co2":{"ppm":%s}}}}' % number
    with pytest.raises(InvalidEvent, match="JSON number|too large"):
        parse_event(body)
    assert parse_event(body.replace(number, "1e308")).raw["event"]["data"]["co2"]["ppm"] == 1e308


def test_nesting_is_refused_past_a_fixed_depth_whatever_the_stack():
    """What parses must not depend on how deep the caller's stack is (a body ingest
    accepted once raised RecursionError in a worker): the bound is MAX_JSON_DEPTH."""
    from core.events import MAX_JSON_DEPTH, load_json

    ok, too_deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)

    def at_depth(frames, text):
        return load_json(text) if frames == 0 else at_depth(frames - 1, text)

    for frames in (0, 300, 800):
        assert at_depth(frames, ok) is not None
        with pytest.raises(InvalidEvent, match=f"nested more than {MAX_JSON_DEPTH} levels"):
            at_depth(frames, too_deep)
    with pytest.raises(InvalidEvent, match="nested more than"):
        parse_event({"event": json.loads(too_deep)})
