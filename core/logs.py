"""One JSON object per log line, carrying the `eventId`, so logs can be searched per event.

Only fields passed explicitly are written: no request headers, no token, no settings.
That is how secrets stay out of logs: by never handing them to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LOGGER_NAME = "dtconnector"
log = logging.getLogger(LOGGER_NAME)


_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)  # built once, not per line
#: Line breaks to `str.splitlines` (and to log readers) that JSON may write raw: every
#: other one (\n, \r, \x0b, \x0c, \x1c-\x1e) is a control character JSON always escapes.
_RAW_SEPARATORS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def one_line(encoded: str) -> str:
    """`encoded` JSON (text from ``ensure_ascii=False``) with every line separator escaped,
    so the document is exactly one line. They can only occur inside its strings, where the
    escape decodes to the same character."""
    for raw, escaped in _RAW_SEPARATORS:
        if raw in encoded:
            encoded = encoded.replace(raw, escaped)
    return encoded


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not per line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "severity": record.levelname,  # what Google Cloud Logging reads
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return one_line(_ENCODER.encode(entry))


def event_log(level: int, message: str, **fields: object) -> None:
    """Log `message` with structured `fields` (e.g. ``eventId=...``).

    Builds the record itself rather than through `Logger.log`, which walks the call stack
    for a file and line number our JSON lines never show: that walk was most of the cost
    of a log line, paid once per event. Levels, filters and handlers apply as usual.
    """
    if log.isEnabledFor(level):
        log.handle(log.makeRecord(log.name, level, "(dtconnector)", 0, message, (), None, extra={"fields": fields}))


def configure(level: int | str = logging.INFO, stream=None) -> None:
    """Give the `dtconnector` logger a JSON handler unless the host already configured it.

    Platforms call this once per container; calling again is harmless.
    """
    if any(getattr(h, "_dtconnector", False) for h in log.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler._dtconnector = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def start_failed(what: str, exc: BaseException, then: str = "") -> None:
    """Log, in one line a person reads, that `what` ("the worker") could not start. A
    configuration mistake (`core.config.ConfigError`: a setting missing or malformed, a
    `DT_HANDLERS` module missing or broken) is its own one-line message, which names the
    setting or module; anything else comes with its traceback. `then` says what happens
    next ("the batch will be redelivered")."""
    from .config import ConfigError

    tail = f"; {then}" if then else ""
    if isinstance(exc, ConfigError):
        event_log(logging.ERROR, f"{what} could not start: {exc}{tail}")
    else:
        log.error("%s could not start (%s)%s", what, type(exc).__name__, tail, exc_info=exc)
