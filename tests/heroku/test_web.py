"""The web dyno's app (`heroku.asgi.app`) over real HTTP, on the uvicorn server the Procfile
runs (the harness's in-process server): routes, statuses, the response format, health,
configuration read lazily, backpressure, and the metrics production records."""

from __future__ import annotations

import os

import pytest

from core.metrics import ACK_LATENCY, REQUESTS
from heroku import runtime
from tests.dt import event_body, event_id_of, signed
from tests.http_probes import exchange, post_head, statuses
from tests.metrics_native import key
from tests.platforms.heroku import http_request


def _get(h, path: str):
    return http_request(h.port, "GET", path, b"", [])


def test_post_on_root_and_any_path_is_accepted_as_json(h):
    for path in ("/", "/dt/connector-1", "/a/b/c?x=1"):
        body = event_body()
        reply = h.deliver(body, signed(body), path=path)
        assert reply.status == 202, path
        assert reply.headers["content-type"] == "application/json"
        assert reply.json == {"status": "accepted", "eventId": event_id_of(body)}
    assert h.queue_depth() == 3


def test_other_methods_on_event_paths_are_405_with_allow(h):
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        reply = h.deliver(b"", {}, method=method, path="/somewhere")
        assert reply.status == 405, method
        assert reply.headers["allow"] == "POST"
        assert reply.json["error"] == "method_not_allowed"


def test_healthz_pings_redis(h):
    status, text, _ = _get(h, "/healthz")
    assert (status, text) == (200, '{"status":"ok"}')


def test_healthz_and_post_are_503_when_redis_is_down(h):
    body = event_body()
    with h.broken("claims"):
        status, text, _ = _get(h, "/healthz")
        reply = h.deliver(body, signed(body))
    assert (status, text) == (503, '{"status":"unavailable","redis":"ConnectionError"}')
    assert reply.status == 503 and reply.headers["retry-after"] == "5"
    assert reply.json == {"error": "unavailable", "reason": "event store unavailable"}
    assert h.deliver(body, signed(body)).status == 202  # nothing was claimed: DT's retry is accepted


def test_missing_redis_url_is_503_naming_the_variable_and_counted(heroku):
    h = heroku()
    del os.environ["REDIS_URL"]
    runtime.reset()
    body = event_body()
    reply = h.deliver(body, signed(body))
    assert reply.status == 503 and reply.headers["retry-after"] == "5"
    assert "REDIS_URL" in reply.json["reason"]
    assert _get(h, "/healthz")[0] == 503
    # Counted although no Receiver could be built: the dyno's metrics show why DT is retrying.
    reason = reply.json["reason"]
    assert h.metrics()[key(REQUESTS, status="503", reason=reason)] == 1


def test_oversized_content_length_is_413_before_reading_the_body_and_counted(h):
    data, closed = exchange(h.port, post_head({"Content-Length": str(256 * 1024 + 1)}))  # no body sent
    assert statuses(data) == [413] and closed
    assert data.endswith(b'{"error":"payload_too_large","limit":262144}')
    assert h.queue_depth() == 0
    got = h.metrics()
    assert got[key(REQUESTS, status="413", reason="payload_too_large")] == 1
    assert got[key(ACK_LATENCY, status="413")] == 1


def test_signature_headers_joined_by_a_proxy_are_refused(h):
    body = event_body()
    token = signed(body)["X-Dt-Signature"]
    assert h.deliver(body, {"X-Dt-Signature": f"{token}, {token}"}).status == 401


def test_past_the_backlog_bound_new_events_get_503_with_retry_after(heroku):
    h = heroku(DT_MAX_BACKLOG="3")
    bodies = [event_body() for _ in range(4)]
    assert [h.deliver(b, signed(b)).status for b in bodies[:3]] == [202, 202, 202]
    refused = h.deliver(bodies[3], signed(bodies[3]))
    assert refused.status == 503 and refused.headers["retry-after"] == "5"
    assert refused.json == {"error": "unavailable", "reason": "too many events waiting for the worker"}
    assert h.deliver(bodies[0], signed(bodies[0])).status == 200  # a duplicate is still answered
    assert h.queue_depth() == 3
    assert h.metrics()[key(REQUESTS, status="503", reason="too many events waiting for the worker")] == 1
    h.drain()
    assert h.deliver(bodies[3], signed(bodies[3])).status == 202  # DT's retry, once there is room


@pytest.mark.parametrize("value", ["lots", "0", "2.5", "-1"])
def test_a_malformed_backlog_bound_is_503_naming_the_variable(heroku, value):
    h = heroku(DT_MAX_BACKLOG=value)
    body = event_body()
    reply = h.deliver(body, signed(body))
    assert reply.status == 503 and "DT_MAX_BACKLOG" in reply.json["reason"]
