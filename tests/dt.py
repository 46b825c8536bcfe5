"""Building DT-shaped requests for tests: bodies, signatures, the shared samples."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from emulator.signing import sign

SECRET = "contract-test-secret-0123456789abcdef"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "samples"
#: The env every contract test gives a platform unless it says otherwise.
BASE_ENV = {"DT_SIGNATURE_SECRET": SECRET, "DT_CLOCK_LEEWAY_S": "60"}


def event_body(
    event_type: str = "temperature",
    *,
    event_id: str | None = None,
    device: str = "dev1",
    project: str = "proj1",
    timestamp: str = "2026-11-22T10:00:00.000000Z",
    data: dict | None = None,
    labels: dict | None = None,
) -> bytes:
    if data is None:
        data = {"temperature": {"value": 21.5, "updateTime": timestamp}} if event_type == "temperature" else {
            event_type: {"updateTime": timestamp}
        }
    doc = {
        "event": {
            "eventId": event_id or uuid.uuid4().hex[:20],
            "targetName": f"projects/{project}/devices/{device}",
            "eventType": event_type,
            "data": data,
            "timestamp": timestamp,
        },
        "labels": labels if labels is not None else {"name": "sensor"},
        "metadata": {"deviceId": device, "projectId": project, "deviceType": event_type, "productNumber": ""},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signed(body: bytes, secret: str = SECRET, **claims) -> dict[str, str]:
    return {"X-Dt-Signature": sign(body, secret, **claims), "Content-Type": "application/json"}


def event_id_of(body: bytes) -> str:
    return json.loads(body)["event"]["eventId"]


def sample_bodies() -> list[bytes]:
    """One body of every event type, exactly as in ``shared/samples/event-types.jsonl``."""
    lines = (SAMPLES / "event-types.jsonl").read_text().splitlines()
    return [line.encode() for line in lines if line.strip()]


def signed_sample() -> dict:
    return json.loads((SAMPLES / "signed-touch-2022.json").read_text())
