"""A missing DT_HANDLERS module on Azure Functions: one log line naming it when the worker
starts; the function raises, so the host retries the message (then poisons it)."""

from __future__ import annotations

import pytest
from azure.functions.queue import QueueMessage

from tests.logcapture import dtconnector_log, start_failure_lines
from tests.platforms.azure import call, functions_by_name


def test_a_missing_handler_module_is_one_log_line_and_the_message_is_retried(tmp_path, monkeypatch):
    import azure_trigger.function_app as function_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DT_HANDLERS", "handlers")
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")  # clients connect lazily
    function_app.reset()
    try:
        with dtconnector_log() as records, pytest.raises(Exception, match="cannot load handler module 'handlers'"):
            call(functions_by_name()["process"], QueueMessage(id="1", body=b"{}", dequeue_count=1, pop_receipt="r"))
    finally:
        function_app.reset()
    assert start_failure_lines(records) == [
        "the worker could not start: cannot load handler module 'handlers' (DT_HANDLERS): ModuleNotFoundError: "
        f"No module named 'handlers' (no handlers.py in {tmp_path} or the installed packages); "
        "the message will be retried"
    ]
