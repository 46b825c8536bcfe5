"""Configuration and SDK clients for the Azure adapters.

The Azure SDKs are imported inside the builders, not at module import: `ingest` and
`process` build their clients once per container, on first use.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Mapping, Optional, Union

from core.config import ConfigError
from core.ports import StoreError
from core.proxies import endpoint_environment

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


IDENTITY_PREFIX = "AzureWebJobsStorage__"
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_SERVICE_URI = re.compile(r"https?://[^\s/?#]+/?[^\s?#]*")


@dataclass(frozen=True)
class IdentityConnection:
    """The storage account reached with an identity instead of a key: the Flex Consumption
    plan's model (deploy.sh sets AzureWebJobsStorage__accountName, __credential=managedidentity
    and __clientId, and no connection string). The queue trigger reads the same settings, so
    ingest's queue and the trigger's queue are one.
    """

    table_endpoint: str
    queue_endpoint: str
    managed_identity: bool  # __credential=managedidentity: ManagedIdentityCredential only
    client_id: Optional[str] = None  # a user-assigned identity; None: the system-assigned one

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Optional["IdentityConnection"]:
        def setting(name: str) -> str:
            return (env.get(IDENTITY_PREFIX + name) or "").strip()

        account = setting("accountName")
        tables, queues = setting("tableServiceUri"), setting("queueServiceUri")
        if not (account or tables or queues):
            return None
        if account and not _ACCOUNT_NAME.fullmatch(account):
            raise ConfigError(f"{IDENTITY_PREFIX}accountName is not a storage account name (3-24 lowercase letters and digits)")
        for name, uri in (("tableServiceUri", tables), ("queueServiceUri", queues)):
            if uri and not _SERVICE_URI.fullmatch(uri):
                raise ConfigError(f"{IDENTITY_PREFIX}{name} is not an http(s) URL")
            if not uri and not account:
                raise ConfigError(f"{IDENTITY_PREFIX}{name} (or {IDENTITY_PREFIX}accountName) is not set")
        credential = setting("credential").lower()
        if credential not in ("", "managedidentity"):
            raise ConfigError(f"{IDENTITY_PREFIX}credential must be managedidentity (or unset)")
        return cls(
            table_endpoint=tables or f"https://{account}.table.core.windows.net",
            queue_endpoint=queues or f"https://{account}.queue.core.windows.net",
            managed_identity=credential == "managedidentity",
            client_id=setting("clientId") or None,
        )

    @cached_property
    def credential(self):
        """One token credential for the tables and the queue (azure-identity, imported here)."""
        if self.managed_identity:
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=self.client_id) if self.client_id else ManagedIdentityCredential()
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self.client_id)


Connection = Union[str, IdentityConnection]


@dataclass(frozen=True)
class AzureConfig:
    connection: Connection  # a connection string is never logged, never put in an error message
    queue_name: str
    dedup_table: str
    state_table: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AzureConfig":
        env = os.environ if env is None else env
        connection: Connection = (env.get("DT_STORAGE_CONNECTION") or env.get("AzureWebJobsStorage") or "").strip()
        if not connection:
            connection = IdentityConnection.from_env(env) or ""
        if not connection:
            raise ConfigError(
                "AzureWebJobsStorage (or DT_STORAGE_CONNECTION, or the identity-based "
                f"{IDENTITY_PREFIX}accountName) is not set"
            )
        if isinstance(connection, str) and connection.replace(" ", "").lower() == "usedevelopmentstorage=true":
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


def service_url(connection: Connection, service: str) -> str:
    """The account's endpoint for `service` ("table" or "queue"): the connection string's
    ``TableEndpoint``/``QueueEndpoint``, else the one its account name and suffix make."""
    if isinstance(connection, IdentityConnection):
        return connection.table_endpoint if service == "table" else connection.queue_endpoint
    parts = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
    explicit = parts.get(f"{service.capitalize()}Endpoint", "").strip()
    if explicit:
        return explicit
    protocol = parts.get("DefaultEndpointsProtocol", "https").strip() or "https"
    suffix = parts.get("EndpointSuffix", "core.windows.net").strip() or "core.windows.net"
    return f"{protocol}://{parts.get('AccountName', '').strip()}.{service}.{suffix}"


def environment_options(url: str, env: Mapping[str, str] | None = None) -> dict:
    """Client options that apply the proxy and CA-bundle environment to `url` once, when
    the client is built, instead of azure-core's transport re-reading it on every storage
    call (`core.proxies`)."""
    found = endpoint_environment(url, env)
    options: dict = {"use_env_settings": False}
    if found.proxies:
        options["proxies"] = found.proxies
    if found.ca_bundle:
        options["connection_verify"] = found.ca_bundle
    return options


def table_client(connection: Connection, table_name: str):
    from azure.data.tables import TableClient

    options = dict(
        retry_total=RETRIES,
        retry_backoff_factor=BACKOFF_S,
        retry_backoff_max=2,
        connection_timeout=CONNECTION_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        **environment_options(service_url(connection, "table")),
    )
    if isinstance(connection, IdentityConnection):
        return TableClient(connection.table_endpoint, table_name, credential=connection.credential, **options)
    return TableClient.from_connection_string(connection, table_name, **options)


def queue_client(connection: Connection, queue_name: str):
    """A client whose messages are base64 text: what the queue trigger decodes by default
    (host.json `extensions.queues.messageEncoding` = base64)."""
    from azure.storage.queue import LinearRetry, QueueClient, TextBase64EncodePolicy

    options = dict(
        message_encode_policy=TextBase64EncodePolicy(),
        retry_policy=LinearRetry(backoff=BACKOFF_S, retry_total=RETRIES, random_jitter_range=BACKOFF_S / 2),
        connection_timeout=CONNECTION_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        **environment_options(service_url(connection, "queue")),
    )
    if isinstance(connection, IdentityConnection):
        return QueueClient(connection.queue_endpoint, queue_name, credential=connection.credential, **options)
    return QueueClient.from_connection_string(connection, queue_name, **options)


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


__all__ = ["AzureConfig", "IdentityConnection", "queue_client", "table_client", "translated"]
