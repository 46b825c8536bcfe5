"""Configuration and SDK clients for the Azure adapters.

The Azure SDKs are imported inside the builders, not at module import: `ingest` and
`process` build their clients once per container, on first use.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Mapping

from core.config import ConfigError
from core.ports import StoreError

DEFAULT_QUEUE = "dt-events"
DEFAULT_DEDUP_TABLE = "dtevents"
DEFAULT_STATE_TABLE = "dtdevicestate"

# The Storage emulator's documented development account (public, not a secret).
_DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={_DEV_ACCOUNT_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)

# DT waits 10 s for an answer and ingest makes three storage calls: fail fast and let DT
# retry rather than sit in the SDKs' default back-off (15 s for queues).
CONNECTION_TIMEOUT_S = 3
READ_TIMEOUT_S = 5
RETRIES = 2
BACKOFF_S = 0.25


@dataclass(frozen=True)
class AzureConfig:
    connection: str  # never logged, never put in an error message
    queue_name: str
    dedup_table: str
    state_table: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AzureConfig":
        env = os.environ if env is None else env
        connection = (env.get("DT_STORAGE_CONNECTION") or env.get("AzureWebJobsStorage") or "").strip()
        if not connection:
            raise ConfigError("AzureWebJobsStorage (or DT_STORAGE_CONNECTION) is not set")
        if connection.replace(" ", "").lower() == "usedevelopmentstorage=true":
            connection = DEVELOPMENT_STORAGE  # the SDKs do not expand this shorthand
        return cls(
            connection=connection,
            queue_name=env.get("DT_QUEUE_NAME", "").strip() or DEFAULT_QUEUE,
            dedup_table=env.get("DT_DEDUP_TABLE", "").strip() or DEFAULT_DEDUP_TABLE,
            state_table=env.get("DT_STATE_TABLE", "").strip() or DEFAULT_STATE_TABLE,
        )

    def __repr__(self) -> str:  # keep the account key out of tracebacks and logs
        return (
            f"AzureConfig(queue_name={self.queue_name!r}, dedup_table={self.dedup_table!r}, "
            f"state_table={self.state_table!r})"
        )


def table_client(connection: str, table_name: str):
    from azure.data.tables import TableClient

    return TableClient.from_connection_string(
        connection,
        table_name,
        retry_total=RETRIES,
        retry_backoff_factor=BACKOFF_S,
        retry_backoff_max=2,
        connection_timeout=CONNECTION_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )


def queue_client(connection: str, queue_name: str):
    """A client whose messages are base64 text: what the queue trigger decodes by default
    (host.json `extensions.queues.messageEncoding` = base64)."""
    from azure.storage.queue import LinearRetry, QueueClient, TextBase64EncodePolicy

    return QueueClient.from_connection_string(
        connection,
        queue_name,
        message_encode_policy=TextBase64EncodePolicy(),
        retry_policy=LinearRetry(backoff=BACKOFF_S, retry_total=RETRIES, random_jitter_range=BACKOFF_S / 2),
        connection_timeout=CONNECTION_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )


def describe(exc: BaseException) -> str:
    """Error type and service error code only: an SDK message may echo the URL, and a SAS
    connection string puts its token in the URL."""
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f" ({code})" if code else "")


@contextlib.contextmanager
def translated(what: str, error: type[StoreError] = StoreError) -> Iterator[None]:
    """Turn any Azure SDK error raised inside into `error` (StoreError or QueueError)."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except AzureError as exc:
        raise error(f"{what} failed: {describe(exc)}") from exc


__all__ = ["AzureConfig", "queue_client", "table_client", "translated"]
