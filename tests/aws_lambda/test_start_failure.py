"""A missing DT_HANDLERS module on Lambda: one log line naming it when the worker starts,
and the batch redelivered (nothing acknowledged is dropped)."""

from __future__ import annotations

import aws_lambda.handler as handler
from tests.logcapture import dtconnector_log, start_failure_lines


def test_a_missing_handler_module_is_one_log_line_and_the_batch_is_redelivered(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Lambda starts in the bundle root (/var/task); no handlers.py here
    for name, value in {"DT_HANDLERS": "handlers", "DT_DEDUP_TABLE": "dedup", "DT_STATE_TABLE": "state",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    handler.reset()
    try:
        with dtconnector_log() as records:
            reply = handler.process({"Records": [{"messageId": "m1", "body": "{}"}]}, None)
    finally:
        handler.reset()
    assert reply == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert start_failure_lines(records) == [
        "the worker could not start: cannot load handler module 'handlers' (DT_HANDLERS): ModuleNotFoundError: "
        f"No module named 'handlers' (no handlers.py in {tmp_path} or the installed packages); "
        "the whole batch will be redelivered"
    ]
