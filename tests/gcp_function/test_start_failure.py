"""A missing DT_HANDLERS module on Cloud Functions: one log line naming it when the worker
starts; the function raises, so Pub/Sub redelivers (then dead-letters)."""

from __future__ import annotations

import base64

import pytest

from tests.logcapture import dtconnector_log, start_failure_lines


def test_a_missing_handler_module_is_one_log_line_and_the_message_is_redelivered(tmp_path, monkeypatch):
    from cloudevents.http import CloudEvent

    import gcp_function.main as main

    monkeypatch.chdir(tmp_path)  # Cloud Functions starts in the source root (/workspace)
    monkeypatch.setenv("DT_HANDLERS", "handlers")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # a client that needs no credentials
    main.reset()
    event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub/t"},
                       {"message": {"data": base64.b64encode(b"{}").decode(), "messageId": "1"}})
    try:
        with dtconnector_log() as records, pytest.raises(Exception, match="cannot load handler module 'handlers'"):
            main.process(event)
    finally:
        main.reset()
    assert start_failure_lines(records) == [
        "the worker could not start: cannot load handler module 'handlers' (DT_HANDLERS): ModuleNotFoundError: "
        f"No module named 'handlers' (no handlers.py in {tmp_path} or the installed packages); "
        "Pub/Sub will redeliver"
    ]
