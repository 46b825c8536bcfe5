"""The Flask app's routes, statuses and response format."""

from __future__ import annotations

import io

from heroku import runtime
from tests.dt import event_body, event_id_of, signed


def test_post_on_root_and_any_path_is_accepted_as_json(h):
    for path in ("/", "/dt/connector-1", "/a/b/c?x=1"):
        body = event_body()
        response = h.client.post(path, data=body, headers=signed(body))
        assert response.status_code == 202, path
        assert response.headers["Content-Type"] == "application/json"
        assert response.get_json() == {"status": "accepted", "eventId": event_id_of(body)}
    assert h.queue_depth() == 3


def test_other_methods_on_event_paths_are_405_with_allow(h):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = h.client.open("/somewhere", method=method)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "POST"
        assert response.get_json()["error"] == "method_not_allowed"


def test_healthz_pings_redis(h):
    response = h.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_and_post_are_503_when_redis_is_down(h):
    runtime.redis()  # build the real objects, then swap the client for a dead one
    runtime._cache["redis"] = h.dead_client()
    assert h.client.get("/healthz").status_code == 503
    body = event_body()
    with h.broken("claims"):
        reply = h.deliver(body, signed(body))
    assert reply.status == 503
    assert reply.headers["Retry-After"]


def test_missing_redis_url_is_503_naming_the_variable_not_500(heroku):
    h = heroku()
    import os

    del os.environ["REDIS_URL"]
    runtime.reset()
    body = event_body()
    response = h.client.post("/", data=body, headers=signed(body))
    assert response.status_code == 503
    assert "REDIS_URL" in response.get_json()["reason"]
    assert h.client.get("/healthz").status_code == 503


class _Unreadable(io.BytesIO):
    def read(self, *args):
        raise AssertionError("the body of an oversized request must not be read")

    readinto = readline = read


def test_oversized_content_length_is_413_before_reading_the_body(h):
    response = h.client.post(
        "/",
        input_stream=_Unreadable(),
        environ_overrides={"CONTENT_LENGTH": str(256 * 1024 + 1)},
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.get_json() == {"error": "payload_too_large", "limit": 256 * 1024}
    assert h.queue_depth() == 0


def test_signature_headers_joined_by_a_proxy_are_refused(h):
    body = event_body()
    token = signed(body)["X-Dt-Signature"]
    response = h.client.post("/", data=body, headers={"X-Dt-Signature": f"{token}, {token}"})
    assert response.status_code == 401
