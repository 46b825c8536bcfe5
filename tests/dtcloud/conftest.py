"""Fixtures: DT's REST API stand-in (emulator.dtapi) on a free loopback port, credentials
pointing the CLI at it, and a project with devices and history."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("requests", reason="the `dt` extra (requests) is not installed")

from emulator.dtapi import Device, StandIn  # noqa: E402
from tests.dt import SECRET  # noqa: E402
from tests.e2e.conftest import make_serve  # noqa: E402,F401  (the real `dtconnector serve`)

PROJECT = "proj-test"
KEY_ID, EMAIL = "key-1", "sa-1@example.serviceaccount"


@pytest.fixture
def standin():
    s = StandIn(page_size=3).start()  # small pages: every list is paginated
    yield s
    s.stop()


@pytest.fixture
def sa_secret():
    return secrets.token_urlsafe(24)


@pytest.fixture
def dt_env(standin, sa_secret, monkeypatch, tmp_path):
    """The environment a user sets, pointed at the stand-in (cwd: a fresh directory)."""
    standin.add_service_account(KEY_ID, sa_secret, EMAIL)
    standin.add_project(PROJECT)
    env = standin.env(KEY_ID, sa_secret, EMAIL)
    env["DT_PROJECT_ID"] = PROJECT
    env["DT_SIGNATURE_SECRET"] = SECRET  # the same secret the `make_serve` receiver verifies
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("DT_HANDLERS", "DT_SIGNATURE_MODE", "DT_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)
    return env


def temperature(standin: StandIn, device: str, value: float, ts: datetime) -> dict:
    return standin.make_event(PROJECT, device, "temperature",
                              {"temperature": {"value": value, "updateTime": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}},
                              ts)


def add_history(standin: StandIn, devices: int, hours: int, *, end: datetime | None = None,
                types=("temperature", "touch")) -> list[dict]:
    """`devices` devices, each with one event of each type per hour for `hours` hours (history only)."""
    end = end or datetime.now(timezone.utc) - timedelta(minutes=1)
    out = []
    for i in range(devices):
        dev = f"dev{i:02d}"
        standin.add_device(PROJECT, Device(dev, labels={"room": f"r{i}", "secretish": "x"}))
        for h in range(hours, 0, -1):
            ts = end - timedelta(hours=h - 1, minutes=i)
            for t in types:
                data = ({"temperature": {"value": 20.0 + h, "updateTime": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
                        if t == "temperature" else {t: {"updateTime": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
                e = standin.make_event(PROJECT, dev, t, data, ts)
                standin.publish(PROJECT, e, deliver=False)
                out.append(e)
    return out
