"""The proxy and CA-bundle environment reaches the Azure SDK clients once, when they are
built, not on every storage call (`azure_trigger.clients.environment_options`), and keeps its
meaning: a proxy is used unless NO_PROXY covers the endpoint. Against Azurite."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("azure.data.tables", reason="the Azure SDKs are in the [azure] extra")

import requests.utils  # noqa: E402
from azure.core.exceptions import ServiceRequestError  # noqa: E402

from azure_trigger.clients import (  # noqa: E402
    DEVELOPMENT_STORAGE,
    IdentityConnection,
    environment_options,
    queue_client,
    service_url,
    table_client,
)
from tests.platforms.base import free_port  # noqa: E402


def test_service_url_from_each_kind_of_connection():
    assert service_url(DEVELOPMENT_STORAGE, "table") == "http://127.0.0.1:10002/devstoreaccount1"
    assert service_url(DEVELOPMENT_STORAGE, "queue") == "http://127.0.0.1:10001/devstoreaccount1"
    key = "AccountKey=a2V5;"
    assert service_url(f"DefaultEndpointsProtocol=https;AccountName=dtacct;{key}EndpointSuffix=core.chinacloudapi.cn",
                       "queue") == "https://dtacct.queue.core.chinacloudapi.cn"
    assert service_url(f"AccountName=dtacct;{key}", "table") == "https://dtacct.table.core.windows.net"
    identity = IdentityConnection("https://t.example.net", "https://q.example.net", managed_identity=True)
    assert service_url(identity, "table") == "https://t.example.net"
    assert service_url(identity, "queue") == "https://q.example.net"


def test_environment_options_apply_the_proxy_no_proxy_and_ca_bundle(no_proxy_environment):
    env = no_proxy_environment
    assert environment_options("https://dtacct.table.core.windows.net", {}) == {"use_env_settings": False}
    env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_options("https://dtacct.table.core.windows.net", {})["proxies"]["https"] == "http://proxy.internal:3128"
    env.setenv("NO_PROXY", ".core.windows.net")
    assert "proxies" not in environment_options("https://dtacct.table.core.windows.net", {})
    bundle = {"REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"}
    assert environment_options("https://x.example", bundle)["connection_verify"] == "/etc/corp-ca.pem"


def test_storage_calls_do_not_rescan_the_environment(azurite, no_proxy_environment, monkeypatch):
    """The cost this removes: `requests` reading every environment variable (and looking for
    a ~/.netrc) on each call. Counted across ten table and queue calls: none."""
    tables = table_client(azurite.connection, "env" + uuid.uuid4().hex[:12])
    queue = queue_client(azurite.connection, "env-" + uuid.uuid4().hex[:12])
    scans = []
    real_getproxies, real_netrc = requests.utils.getproxies, requests.utils.get_netrc_auth
    monkeypatch.setattr(requests.utils, "getproxies", lambda: scans.append("proxies") or real_getproxies())
    monkeypatch.setattr(requests.utils, "get_netrc_auth", lambda *a, **k: scans.append("netrc") or real_netrc(*a, **k))
    tables.create_table()
    queue.create_queue()
    for i in range(4):
        tables.create_entity({"PartitionKey": "p", "RowKey": str(i)})
        queue.send_message(f"m{i}")
    assert len(list(tables.list_entities())) == 4
    assert scans == []


def test_a_proxy_in_the_environment_is_used_unless_no_proxy_covers_the_endpoint(azurite, no_proxy_environment):
    env = no_proxy_environment
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    name = "env" + uuid.uuid4().hex[:12]
    with pytest.raises(ServiceRequestError):  # through the (dead) proxy: refused
        table_client(azurite.connection, name).create_table()
    env.setenv("NO_PROXY", "127.0.0.1")
    table_client(azurite.connection, name).create_table()  # straight to Azurite
    assert table_client(azurite.connection, name).query_entities("PartitionKey eq 'x'") is not None
