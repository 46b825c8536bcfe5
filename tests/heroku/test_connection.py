"""REDIS_URL handling: Heroku's rediss:// with a self-signed certificate, and plain redis://."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time

import pytest
import redis

from core.config import ConfigError
from heroku.connection import client_options, connect, redis_url
from tests.platforms.heroku import free_port


def test_redis_url_is_required_and_checked():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        redis_url({})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        redis_url({"REDIS_URL": "http://example.com"})
    assert redis_url({"REDIS_URL": " rediss://:p@h:1 "}) == "rediss://:p@h:1"
    assert redis_url({"REDIS_TLS_URL": "rediss://:p@h:2"}) == "rediss://:p@h:2"


def test_rediss_skips_verification_of_herokus_self_signed_certificate():
    options = client_options("rediss://:pw@ec2-1-2-3-4.compute-1.amazonaws.com:12345", {})
    assert options["ssl_cert_reqs"] is None and options["ssl_check_hostname"] is False
    client = connect("rediss://:pw@ec2-1-2-3-4.compute-1.amazonaws.com:12345", {})
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.connection.SSLConnection
    assert kwargs["ssl_cert_reqs"] is None and kwargs["password"] == "pw"


def test_verification_can_be_kept_on_and_plain_redis_gets_no_ssl_options():
    assert "ssl_cert_reqs" not in client_options("rediss://h:1", {"DT_REDIS_VERIFY_TLS": "1"})
    assert not any(k.startswith("ssl") for k in client_options("redis://h:1", {}))
    client = connect("redis://h:1/3", {})  # redis-py would raise TypeError on ssl_cert_reqs here
    assert client.connection_pool.connection_kwargs["db"] == 3


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """A redis-server speaking only TLS, with a freshly made self-signed certificate."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "heroku-kvs-self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--tls-cert-file", str(folder / "cert.pem"), "--tls-key-file", str(folder / "key.pem"),
         "--tls-ca-cert-file", str(folder / "cert.pem"), "--tls-auth-clients", "no", "--requirepass", "s3cret"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"rediss://:s3cret@127.0.0.1:{port}/0"
    client = connect(url, {})
    deadline = time.monotonic() + 15
    try:
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    pytest.skip("this redis-server cannot serve TLS: " + proc.stderr.read().decode()[-300:])
                if time.monotonic() > deadline:
                    pytest.skip("the TLS redis-server did not answer")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_url_with_a_self_signed_certificate_works(tls_redis):
    client = connect(tls_redis, {})
    assert client.ping() is True
    assert client.set("k", "v", nx=True) and client.get("k") == b"v"
    client.close()


def test_rediss_with_verification_on_refuses_the_self_signed_certificate(tls_redis):
    client = connect(tls_redis, {"DT_REDIS_VERIFY_TLS": "1"})
    with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
        client.ping()
    client.close()
