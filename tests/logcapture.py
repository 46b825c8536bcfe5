"""What reaches the `dtconnector` logger during a block (whether or not an entry point has
configured its JSON handler, which stops propagation to the root logger)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def dtconnector_log() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    logger = logging.getLogger("dtconnector")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def start_failure_lines(records: list[logging.LogRecord]) -> list[str]:
    """The messages of the "could not start" lines, each checked to carry no traceback."""
    lines = [r for r in records if "could not start" in r.getMessage()]
    assert all(r.exc_info is None for r in lines), "a configuration mistake is one line, no traceback"
    return [r.getMessage() for r in lines]
