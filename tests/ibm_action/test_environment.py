"""The proxy and CA-bundle environment reaches the Cloudant client once, when it is built,
not on every call (`ibm_action.cloudant.environment_options`), and keeps its meaning: a proxy
is used unless NO_PROXY covers the endpoint. Against pouchdb-server."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("ibmcloudant", reason="the Cloudant SDK is in the [ibm] extra")

import requests.utils  # noqa: E402

from ibm_action.cloudant import CloudantConfig, build_service, environment_options  # noqa: E402
from tests.platforms.base import free_port  # noqa: E402
from tests.platforms.ibm import ADMIN  # noqa: E402


def service(stand_in):
    return build_service(CloudantConfig.from_env(
        {"CLOUDANT_URL": stand_in.url, "CLOUDANT_USERNAME": ADMIN[0], "CLOUDANT_PASSWORD": ADMIN[1]}))


def test_environment_options_apply_the_proxy_no_proxy_and_ca_bundle(no_proxy_environment):
    env = no_proxy_environment
    assert environment_options("https://acct.cloudantnosqldb.appdomain.cloud", {}) == {}
    env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_options("https://acct.cloudantnosqldb.appdomain.cloud", {}) == \
        {"proxies": {"https": "http://proxy.internal:3128"}}
    env.setenv("NO_PROXY", ".appdomain.cloud")
    assert environment_options("https://acct.cloudantnosqldb.appdomain.cloud", {}) == {}
    assert environment_options("https://x.example", {"CURL_CA_BUNDLE": "/etc/corp-ca.pem"})["verify"] == "/etc/corp-ca.pem"


def test_cloudant_calls_do_not_rescan_the_environment(ibm_stand_in, no_proxy_environment, monkeypatch):
    """The cost this removes: `requests` reading every environment variable (and looking for
    a ~/.netrc) on each call. Counted across eight Cloudant calls: none."""
    cloudant = service(ibm_stand_in)
    db = "env_" + uuid.uuid4().hex[:12]
    scans = []
    real_getproxies, real_netrc = requests.utils.getproxies, requests.utils.get_netrc_auth
    monkeypatch.setattr(requests.utils, "getproxies", lambda: scans.append("proxies") or real_getproxies())
    monkeypatch.setattr(requests.utils, "get_netrc_auth", lambda *a, **k: scans.append("netrc") or real_netrc(*a, **k))
    cloudant.put_database(db=db)
    for i in range(6):
        cloudant.post_document(db=db, document={"_id": f"d{i}"})
    assert cloudant.get_database_information(db=db).get_result()["doc_count"] == 6
    assert scans == []


def test_a_proxy_in_the_environment_is_used_unless_no_proxy_covers_the_endpoint(ibm_stand_in, no_proxy_environment):
    env = no_proxy_environment
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens: the proxy refuses
    with pytest.raises(requests.exceptions.ConnectionError):
        service(ibm_stand_in).get_server_information()
    env.setenv("NO_PROXY", "127.0.0.1")
    assert service(ibm_stand_in).get_server_information().get_status_code() == 200
