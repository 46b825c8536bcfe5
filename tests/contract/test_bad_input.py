"""Bad input is named, not retried, on every platform: a signed body that can never become
an event is a 400 with the reason (DT would retry a 503 for 12 hours), whatever the
platform's stack depth; valid JSON that merely looks hostile is an event like any other.
Direct mode's counterpart (a poison message) is in test_direct_delivery.py.
"""

from __future__ import annotations

import pytest

from tests.dt import signed
from tests.malformed import ACCEPTED_ODDITIES, MALFORMED, with_value


@pytest.mark.parametrize("body, reason", [(b, r) for _, b, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_a_body_that_cannot_be_an_event_is_400_with_its_reason(platform, body, reason):
    reply = platform.deliver(body, signed(body))
    assert (reply.status, reply.json and reason in reply.json["reason"]) == (400, True), (reply.status, reply.body[:200])
    assert platform.queue_depth() == 0


def test_hostile_looking_valid_json_is_accepted_and_processed_exactly(platform, seen):
    for _, body, _ in ACCEPTED_ODDITIES:
        assert platform.deliver(body, signed(body)).status == 202
    platform.drain()
    assert platform.dead_letters() == []
    values = {e.event_id: e.raw["event"]["data"]["temperature"]["value"] for e in seen}
    assert values == {b.split(b'"eventId":"')[1].split(b'"')[0].decode(): v for _, b, v in ACCEPTED_ODDITIES}


def test_a_duplicate_member_name_means_the_last_one_everywhere(platform, seen):
    """JSON leaves duplicate names to the parser; ours keeps the last, at ingest and in the
    worker alike, so the id that was deduplicated is the id the handler sees."""
    body = with_value("1", "first").replace(b'"eventId":"first"', b'"eventId":"first","eventId":"last"')
    reply = platform.deliver(body, signed(body))
    assert (reply.status, reply.json["eventId"]) == (202, "last")
    platform.drain()
    assert [e.event_id for e in seen] == ["last"]
