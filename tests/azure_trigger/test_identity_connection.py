"""The identity-based storage connection of the Flex Consumption deploy (no connection string).

deploy.sh gives the app AzureWebJobsStorage__accountName, __credential=managedidentity and
__clientId and no AzureWebJobsStorage; the queue trigger reads those, and so must ingest.
Azurite accepts tokens only over TLS, so these tests stop at the SDK clients the adapters get:
real azure-data-tables / azure-storage-queue / azure-identity objects, no network call.
"""

from __future__ import annotations

import pytest

pytest.importorskip("azure.identity", reason="azure-identity is in the [azure] extra")

from azure.data.tables import TableClient  # noqa: E402
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: E402
from azure.storage.queue import QueueClient, TextBase64EncodePolicy  # noqa: E402

from azure_trigger.clients import AzureConfig, IdentityConnection, queue_client, table_client  # noqa: E402
from core.config import ConfigError  # noqa: E402

FLEX = {
    "AzureWebJobsStorage__accountName": "dtconn0a1b2c3d",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "00000000-1111-2222-3333-444444444444",
}


def test_flex_settings_alone_configure_the_receiver():
    config = AzureConfig.from_env(FLEX)
    assert config.connection == IdentityConnection(
        table_endpoint="https://dtconn0a1b2c3d.table.core.windows.net",
        queue_endpoint="https://dtconn0a1b2c3d.queue.core.windows.net",
        managed_identity=True,
        client_id="00000000-1111-2222-3333-444444444444",
    )


def test_clients_use_the_account_endpoints_and_one_managed_identity_credential():
    connection = AzureConfig.from_env(FLEX).connection
    tables = table_client(connection, "dtevents")
    queue = queue_client(connection, "dt-events")
    assert isinstance(tables, TableClient) and isinstance(queue, QueueClient)
    assert tables.url.startswith("https://dtconn0a1b2c3d.table.core.windows.net")
    assert tables.table_name == "dtevents"
    assert queue.url == "https://dtconn0a1b2c3d.queue.core.windows.net/dt-events"
    assert isinstance(tables.credential, ManagedIdentityCredential)
    assert tables.credential is queue.credential  # one token cache for the container
    assert isinstance(queue._message_encode_policy, TextBase64EncodePolicy)  # what the trigger decodes


def test_service_uris_and_default_credential_without_credential_setting():
    connection = AzureConfig.from_env({
        "AzureWebJobsStorage__tableServiceUri": "https://tables.example.net",
        "AzureWebJobsStorage__queueServiceUri": "https://queues.example.net",
    }).connection
    assert isinstance(connection, IdentityConnection)
    assert queue_client(connection, "q").url == "https://queues.example.net/q"
    assert isinstance(table_client(connection, "t").credential, DefaultAzureCredential)


def test_a_connection_string_still_wins():
    env = dict(FLEX, AzureWebJobsStorage="UseDevelopmentStorage=true")
    assert isinstance(AzureConfig.from_env(env).connection, str)


@pytest.mark.parametrize(
    "env, named",
    [
        ({"AzureWebJobsStorage__accountName": "Not_An-Account"}, "accountName"),
        ({"AzureWebJobsStorage__queueServiceUri": "https://q.example.net"}, "tableServiceUri"),
        ({"AzureWebJobsStorage__tableServiceUri": "ftp://x"}, "tableServiceUri"),
        (dict(FLEX, AzureWebJobsStorage__credential="connectionstring"), "credential"),
    ],
)
def test_bad_identity_settings_name_the_setting_not_the_value(env, named):
    with pytest.raises(ConfigError, match=named) as caught:
        AzureConfig.from_env(env)
    assert "Not_An-Account" not in str(caught.value) and "ftp://" not in str(caught.value)
