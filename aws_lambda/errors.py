"""Translate botocore's errors into core's `StoreError` / `QueueError`.

Messages name the service, the operation and AWS's error code only: never a secret,
a request parameter or a credential.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from core.ports import StoreError

CONDITION_FAILED = "ConditionalCheckFailedException"


class ConditionFailed(Exception):
    """A DynamoDB condition expression did not hold (the caller answers False)."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "Unknown")
    return type(exc).__name__


@contextmanager
def translated(what: str, error: type[StoreError] = StoreError) -> Iterator[None]:
    """Run an SDK call: a failed condition becomes `ConditionFailed`, any other
    ClientError / BotoCoreError becomes `error` (chained)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code == CONDITION_FAILED:
            raise ConditionFailed() from None
        raise error(f"{what} failed: {code}") from exc
    except BotoCoreError as exc:
        raise error(f"{what} failed: {type(exc).__name__}") from exc


__all__ = ["ConditionFailed", "translated"]
