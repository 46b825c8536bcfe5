"""GCP in direct mode on Google's Pub/Sub and Firestore emulators: DT's GOOGLE_CLOUD_PUBSUB
connector publishes into the topic itself.

It shares the emulators of tests/platforms/gcp.py (started once, whichever uses them
first) and the same worker entry point (`process`, as Eventarc pushes it), with
``DT_DELIVERY=direct``. `deliver()` plays DT: it publishes the body to the topic, with no
attributes and no ingest, alternating the shapes the decoder accepts (DT's real format is
unpublished). Every other scenario skips there (tests/conftest.py, DIRECT_MODE_MODULES).
"""

from __future__ import annotations

import itertools
import json

from core.direct import decode_direct_message

from . import gcp
from .aws_direct import dt_shapes
from .base import Reply, StandIn, running


class GcpDirectHarness(gcp.GcpHarness):
    def __init__(self, stand_in, env):
        super().__init__(stand_in, {**env, "DT_DELIVERY": "direct"})
        self._shape = itertools.cycle(range(3))

    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        message = list(dt_shapes(body))[next(self._shape)]
        self._si.publisher.publish(self.topic, message.encode("utf-8")).result(timeout=30)
        return Reply(202)

    def inject_message(self, message: str) -> None:
        self._si.publisher.publish(self.topic, message.encode("utf-8")).result(timeout=30)

    def raw_dead_letters(self) -> list[bytes]:
        """Every dead-lettered message as DT (or anyone) published it."""
        return [message.data for message in self.dead_messages()]

    def dead_letters(self) -> list[str]:
        return [json.loads(decode_direct_message(m))["event"]["eventId"] for m in self.raw_dead_letters()]


class GcpDirectStandIn(StandIn):
    """Borrows the http-mode stand-in's emulators instead of starting a second pair."""

    name = "gcp_direct"
    direct = True
    xdist_group = gcp.GcpStandIn.xdist_group

    def start(self) -> None:
        self.resume()

    def resume(self) -> None:
        self._using = running(gcp.STAND_IN)
        self._using.__enter__()  # skips, with gcp's reason, where the emulators cannot run

    def pause(self) -> None:
        self._using.__exit__(None, None, None)

    def stop(self) -> None:
        """Nothing of its own runs: `pause` gave the emulators back."""

    def harness(self, env):
        return GcpDirectHarness(gcp.STAND_IN, env)


STAND_IN = GcpDirectStandIn()
