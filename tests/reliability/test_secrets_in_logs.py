"""A full run on each platform, every log line captured, and no secret or token in it.

Captured: everything reaching the `dtconnector` logger (which stops propagating once an
entry point calls core.logs.configure) and the root logger, at DEBUG, formatted with the
tracebacks; plus whatever the process writes to stdout/stderr (the JSON log handler).
"""

from __future__ import annotations

import logging
import time

from core import on
from core.logs import JsonFormatter
from reliability.inproc import event_id
from tests.dt import event_body, signed

SECRET_NOW = "log-test-current-secret-6c1f0e9a7b5d4c3e2f1a"
SECRET_OLD = "log-test-previous-secret-0a9b8c7d6e5f4a3b2c1d"


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._plain = logging.Formatter("%(levelname)s %(name)s %(message)s %(args)s")
        self._json = JsonFormatter()

    def emit(self, record):
        self.lines.append(self._plain.format(record))
        self.lines.append(self._json.format(record))
        self.lines.append(repr(record.__dict__))


def test_no_secret_or_token_in_any_log_line(make_platform, capfd):
    capture = Capture()
    loggers = [logging.getLogger(), logging.getLogger("dtconnector")]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    tokens: list[str] = []

    def send(body, secret=SECRET_NOW):
        headers = signed(body, secret)
        tokens.append(headers["X-Dt-Signature"])
        return platform.deliver(body, headers).status

    try:
        platform = make_platform(
            DT_SIGNATURE_SECRET=SECRET_NOW, DT_SIGNATURE_SECRET_PREVIOUS=SECRET_OLD, DT_LOG_LEVEL="DEBUG"
        )
        logging.getLogger("dtconnector").setLevel(logging.DEBUG)

        @on("*")
        def picky(event):
            if event.device_id == "d-fails":
                raise RuntimeError(f"handler failed for {event.event_id}")

        valid = event_body(device="d-ok")
        assert send(valid) == 202  # valid
        assert send(valid) == 200  # duplicate
        assert send(event_body(device="d-old"), SECRET_OLD) == 202  # previous secret, rotating
        assert send(event_body(), "not-the-secret-0123456789abcdef0123") == 401  # bad signature
        forged = event_body()
        assert platform.deliver(forged, {"X-Dt-Signature": tokens[0]}).status == 401  # replay
        with platform.broken("claims"):
            assert send(event_body(device="d-outage")) == 503  # store failure
        with platform.broken("queue"):
            assert send(event_body(device="d-outage")) == 503
        failing = event_body(device="d-fails")
        for _ in range(20):  # DT retries: right after an outage a platform may answer 503 once
            if send(failing) == 202:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the event after the outage was never accepted")
        platform.drain()  # handler failure, then dead letter
        assert platform.dead_letters() == [event_id(failing)]
        body_with_token_header = event_body()
        assert platform.deliver(body_with_token_header, {"X-Dt-Signature": "x" + tokens[0]}).status == 401
    finally:
        for lg, level in saved:
            lg.removeHandler(capture)
            lg.setLevel(level)
    out, err = capfd.readouterr()
    text = "\n".join(capture.lines) + out + err
    assert "handler failed" in text and "Traceback" in text  # the tracebacks were captured
    secrets = {"current secret": SECRET_NOW, "previous secret": SECRET_OLD}
    secrets.update({f"token {i}": t for i, t in enumerate(tokens)})
    secrets.update({f"token {i} signature": t.rsplit(".", 1)[1] for i, t in enumerate(tokens)})
    leaked = [name for name, value in secrets.items() if value in text]
    assert leaked == []
