"""Google Cloud Functions on Google's own Firestore and Pub/Sub emulators.

The stand-in runs the emulators' jars with `java` on free loopback ports (skipping when the
Google Cloud CLI's emulators or java are absent) and loads the bundle's root `main.py` with
functions-framework, the runtime Cloud Functions (2nd gen) itself runs:

- `deliver()` sends a real HTTP request through the framework's Flask app to `ingest`.
- `drain()` pulls from a real subscription on the ingest topic and hands each message to
  `process` as Eventarc does: an HTTP request carrying a binary-mode CloudEvent of type
  `google.cloud.pubsub.topic.v1.messagePublished` whose data is
  ``{"message": {"data": <base64>, "attributes": ..., "messageId": ...}, "subscription": ...}``.
  2xx acks, anything else nacks (redelivered at once). The subscription carries a real
  dead-letter policy, which the Pub/Sub emulator implements: after `max_attempts`
  deliveries the emulator itself moves the message to the dead-letter topic.
- `max_attempts` is 5: Pub/Sub's minimum `max_delivery_attempts` (the emulator refuses less,
  as the service does).
- `queue_depth()` must not cost a delivery attempt (Pub/Sub counts every pull), so pulled
  messages stay leased in a local prefetch buffer (as a streaming-pull client holds them)
  and `drain()` delivers those first, each delivery exactly once per pull.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Mapping
from unittest import mock

import pytest

from .base import Harness, Reply, StandIn, free_port

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "gcp_function" / "bundle" / "main.py"
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
START_TIMEOUT_S = 180.0
ACK_DEADLINE_S = 600  # the maximum: prefetched messages stay leased for a whole test
EMULATOR_ENV = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")
_TEST_KNOBS = ("DT_TEST_", "DT_FUZZ_", "DT_BENCH_")  # the test run's own settings, not the receiver's


def sdk_roots() -> list[Path]:
    roots = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(os.path.realpath(gcloud)).parents[1])
    roots += [Path("/usr/lib/google-cloud-sdk"), Path("/usr/share/google-cloud-sdk"), Path("/google-cloud-sdk")]
    return roots


def find_emulator_jars() -> tuple[Path, Path] | str:
    """(firestore jar, pubsub jar), or the reason they cannot be found."""
    for root in sdk_roots():
        fs = root / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
        ps = sorted((root / "platform" / "pubsub-emulator" / "lib").glob("cloud-pubsub-emulator-*.jar"))
        if fs.is_file() and ps:
            return fs, ps[-1]
    return (
        "Google's Firestore and Pub/Sub emulators were not found (install the Google Cloud CLI with "
        "`gcloud components install cloud-firestore-emulator pubsub-emulator`, or the Debian packages "
        "google-cloud-cli-firestore-emulator and google-cloud-cli-pubsub-emulator)"
    )


#: The emulators are test stand-ins that run for minutes: C1 only (no C2 compiler
#: threads) and the serial collector cut their CPU by a third on 2 cores, which the tests
#: running beside them get back.
JVM_FLAGS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:CICompilerCount=1"]


class _Emulator:
    def __init__(self, name: str, argv: list[str], port: int, log_dir: str):
        self.name = name
        self.port = port
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the {self.name} emulator exited with {self.proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self._log.close()


class GcpStandIn(StandIn):
    name = "gcp"
    xdist_group = "gcp"  # two JVMs: seconds of start-up and hundreds of MB each

    def __init__(self):
        self._emulators: list[_Emulator] = []
        self._saved_env: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.active: "GcpHarness | None" = None

    def start(self) -> None:
        java = shutil.which("java")
        if java is None:
            pytest.skip("java is not installed: Google's Firestore/Pub/Sub emulators need a JRE")
        jars = find_emulator_jars()
        if isinstance(jars, str):
            pytest.skip(jars)
        fs_jar, ps_jar = jars
        try:
            import functions_framework  # noqa: F401
            from google.cloud import firestore, pubsub_v1  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"the gcp extra is not installed ({exc.name}): pip install -e '.[gcp]'")

        self._tmp = tempfile.TemporaryDirectory(prefix="dtconnector-gcp-")
        fs_port, ps_port = free_port(), free_port()
        try:
            self._emulators = [
                _Emulator(
                    "firestore",
                    [java, *JVM_FLAGS, "-Duser.language=en", "-cp", str(fs_jar), FIRESTORE_MAIN, "--host", "127.0.0.1", "--port", str(fs_port)],
                    fs_port,
                    self._tmp.name,
                ),
                _Emulator("pubsub", [java, *JVM_FLAGS, "-jar", str(ps_jar), "--host=127.0.0.1", f"--port={ps_port}"], ps_port, self._tmp.name),
            ]
            deadline = time.monotonic() + START_TIMEOUT_S
            for emu in self._emulators:
                while not emu.ready():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {emu.name} emulator did not answer within {START_TIMEOUT_S:.0f} s")
                    time.sleep(0.2)
        except BaseException:
            self._stop_emulators()
            raise

        self.project = f"dt-test-{uuid.uuid4().hex[:8]}"
        self.resume()
        try:
            import functions_framework
            from google.cloud import pubsub_v1

            self.publisher = pubsub_v1.PublisherClient()
            self.subscriber = pubsub_v1.SubscriberClient()
            self._warm_up()
            # The bundle's root main.py, loaded by the Cloud Functions runtime's own framework.
            self.ingest_app = functions_framework.create_app("ingest", str(SHIM), "http")
            self.process_app = functions_framework.create_app("process", str(SHIM), "cloudevent")
        except BaseException:  # not started: nothing will stop it later
            self.pause()
            self.stop()
            raise

    def _warm_up(self) -> None:
        """The emulators answer HTTP before their first real request is fast (JVM warm-up on
        a loaded machine): one round trip each, with a generous timeout, so the first test
        does not measure start-up against the adapters' short production deadlines."""
        from google.cloud import firestore

        ref = firestore.Client().collection("warmup").document("w")
        ref.set({"x": 1}, timeout=120)
        ref.get(timeout=120)
        topic = self.publisher.topic_path(self.project, "warmup")
        self.publisher.create_topic(name=topic, timeout=120)
        self.publisher.publish(topic, b"x").result(timeout=120)

    def _stop_emulators(self) -> None:
        for emu in self._emulators:
            emu.stop()
        self._emulators = []

    def resume(self) -> None:
        """Point the Google clients the entry points build at the emulators."""
        import sys

        self._saved_env = {k: os.environ.get(k) for k in EMULATOR_ENV}
        self._saved_env.update({k: v for k, v in os.environ.items() if k.startswith("DT_")})
        self._sys_path = list(sys.path)
        os.environ["FIRESTORE_EMULATOR_HOST"] = self._emulators[0].host
        os.environ["PUBSUB_EMULATOR_HOST"] = self._emulators[1].host
        os.environ["GOOGLE_CLOUD_PROJECT"] = self.project

    def pause(self) -> None:
        """Forget the last harness's container, give the environment back (the emulator
        settings and the DT_* variables the harnesses set) and unload the bundle's `main`
        (functions-framework loaded it under that name, from a path it added)."""
        import sys

        from gcp_function import main

        main.reset()
        self.active = None
        for key in [k for k in os.environ if k.startswith("DT_")]:
            del os.environ[key]
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path[:] = self._sys_path
        if getattr(sys.modules.get("main"), "__file__", None) == str(SHIM):
            del sys.modules["main"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # absent when start failed before it
            self.subscriber.close()
        self._stop_emulators()
        self._tmp.cleanup()

    def harness(self, env: Mapping[str, str]) -> Harness:
        return GcpHarness(self, env)


class GcpHarness(Harness):
    max_attempts = 5  # Pub/Sub's minimum max_delivery_attempts

    def __init__(self, stand_in: GcpStandIn, env: Mapping[str, str]):
        self._si = stand_in
        u = uuid.uuid4().hex[:10]
        project = stand_in.project
        pub, sub = stand_in.publisher, stand_in.subscriber
        self.topic = pub.topic_path(project, f"dt-events-{u}")
        self.dead_topic = pub.topic_path(project, f"dt-dead-letter-{u}")
        self.subscription = sub.subscription_path(project, f"dt-process-{u}")
        self.dead_subscription = sub.subscription_path(project, f"dt-dead-letter-{u}-sub")
        pub.create_topic(name=self.topic)
        pub.create_topic(name=self.dead_topic)
        sub.create_subscription(
            request={
                "name": self.subscription,
                "topic": self.topic,
                "ack_deadline_seconds": ACK_DEADLINE_S,
                "dead_letter_policy": {"dead_letter_topic": self.dead_topic, "max_delivery_attempts": self.max_attempts},
            }
        )
        sub.create_subscription(request={"name": self.dead_subscription, "topic": self.dead_topic})
        self.env = {
            **{k: v for k, v in env.items() if k.startswith("DT_")},
            "DT_PUBSUB_TOPIC": self.topic,
            "DT_DEDUP_COLLECTION": f"t{u}_dt_events",
            "DT_STATE_COLLECTION": f"t{u}_dt_device_state",
        }
        self._prefetched: dict[str, object] = {}  # message id -> ReceivedMessage (leased)
        self._dead: list = []  # PubsubMessage of each dead-lettered delivery, pulled so far
        self._requeued = 0  # how many of `_dead` were published again
        self.stdout = io.StringIO()  # what Cloud Logging would parse into jsonPayload
        self._activate()

    # -- the container the entry points see ------------------------------------------
    def _activate(self):
        """Make the entry points see exactly this harness's env, with fresh containers."""
        from gcp_function import main

        with self._si.lock:
            if self._si.active is not self:
                for key in [k for k in os.environ if k.startswith("DT_") and not k.startswith(_TEST_KNOBS)]:
                    del os.environ[key]
                os.environ.update(self.env)
                main.reset()
                from gcp_function.metrics import RECORDER

                RECORDER.stream = self.stdout
                self._si.active = self
        return main

    @property
    def claim_store(self):
        return self._activate().claim_store()

    @property
    def state_store(self):
        return self._activate().state_store()

    def new_container(self) -> None:
        self._activate().reset()

    # -- bounded storage: Firestore's TTL policy (the emulator never applies one) ----------
    ttl_never_fires = True

    def _documents(self, collection: str) -> list[dict]:
        from google.cloud import firestore

        return [snap.to_dict() for snap in firestore.Client().collection(collection).stream()]

    def stored_records(self) -> dict[str, int]:
        return {
            "events": len(self._documents(self.env["DT_DEDUP_COLLECTION"])),
            "state": len(self._documents(self.env["DT_STATE_COLLECTION"])),
        }

    def record_expiries(self) -> list[float]:
        # The emulator has no TTL policies to describe: deploy.sh's `gcloud firestore fields
        # ttls update expiresAt` is checked by tests/gcp_function (test_deploy_*).
        return [doc["expiresAt"].timestamp() for doc in self._documents(self.env["DT_DEDUP_COLLECTION"])]

    # -- ingest ------------------------------------------------------------------------
    def deliver(self, body, headers, method="POST", path="/") -> Reply:
        self._activate()
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        client = self._si.ingest_app.test_client()
        resp = client.open(path, method=method, data=body, headers=pairs)
        return Reply(resp.status_code, resp.get_data(as_text=True), dict(resp.headers))

    # -- the queue ---------------------------------------------------------------------
    def _pull_now(self, subscription: str):
        """One pull that answers at once when nothing is waiting (the emulator honours the
        deprecated flag; a blocking pull would cost its whole timeout on an empty queue)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The return_immediately flag is deprecated", DeprecationWarning)
            return self._si.subscriber.pull(
                request={"subscription": subscription, "max_messages": 100, "return_immediately": True}, timeout=30
            )

    def _pull_all(self) -> None:
        while True:
            response = self._pull_now(self.subscription)
            if not response.received_messages:
                return
            for received in response.received_messages:
                self._prefetched[received.message.message_id] = received

    def _cloud_event_request(self, received) -> tuple[dict, bytes]:
        from cloudevents.conversion import to_binary
        from cloudevents.http import CloudEvent

        msg = received.message
        published = msg.publish_time.isoformat().replace("+00:00", "Z")
        attributes = dict(msg.attributes)
        event = CloudEvent(
            {
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "source": f"//pubsub.googleapis.com/{self.topic}",
                "id": msg.message_id,
                "time": published,
                "specversion": "1.0",
                "datacontenttype": "application/json",
            },
            {
                "message": {
                    "data": base64.b64encode(msg.data).decode("ascii"),
                    "attributes": attributes,
                    "messageId": msg.message_id,
                    "message_id": msg.message_id,
                    "publishTime": published,
                    "publish_time": published,
                },
                "subscription": self.subscription,
                # Pub/Sub's push body carries it when the subscription has a dead-letter policy.
                "deliveryAttempt": received.delivery_attempt,
            },
        )
        return to_binary(event)

    def _push(self, received) -> bool:
        headers, body = self._cloud_event_request(received)
        resp = self._si.process_app.test_client().post("/", headers=headers, data=body)
        return 200 <= resp.status_code < 300

    def drain(self) -> None:
        self._activate()
        sub = self._si.subscriber
        while True:
            self._pull_all()  # a pull also lets the emulator dead-letter exhausted messages
            if not self._prefetched:
                return
            batch, self._prefetched = self._prefetched, {}
            for received in batch.values():
                if self._push(received):
                    sub.acknowledge(request={"subscription": self.subscription, "ack_ids": [received.ack_id]})
                else:  # nack: redeliver now (the deployed subscription adds a retry backoff)
                    sub.modify_ack_deadline(
                        request={"subscription": self.subscription, "ack_ids": [received.ack_id], "ack_deadline_seconds": 0}
                    )

    def metrics(self):
        from tests.metrics_native import parse_json_log

        return parse_json_log(self.stdout.getvalue().splitlines())

    def inject_message(self, message: str) -> None:
        import json

        event_id = json.loads(message)["event"]["eventId"]
        self._si.publisher.publish(self.topic, message.encode("utf-8"), eventId=event_id).result(timeout=30)

    def queue_depth(self) -> int:
        self._pull_all()
        return len(self._prefetched)

    def dead_messages(self) -> list:
        """Every message dead-lettered so far: pulled from the dead-letter subscription and
        acknowledged (so kept here for later calls)."""
        sub = self._si.subscriber
        while True:
            response = self._pull_now(self.dead_subscription)
            if not response.received_messages:
                return list(self._dead)
            self._dead.extend(received.message for received in response.received_messages)
            sub.acknowledge(
                request={"subscription": self.dead_subscription, "ack_ids": [r.ack_id for r in response.received_messages]}
            )

    def dead_letters(self) -> list[str]:
        return [message.attributes.get("eventId", "") for message in self.dead_messages()[self._requeued :]]

    def requeue_dead_letters(self) -> int:
        """What an operator does: pull the dead-letter subscription and publish each
        message's data and attributes to the topic again."""
        dead = self.dead_messages()[self._requeued :]
        for message in dead:
            self._si.publisher.publish(self.topic, message.data, **dict(message.attributes)).result(timeout=30)
        self._requeued += len(dead)
        return len(dead)

    def native_expiry(self, key: str) -> float | None:
        from google.cloud import firestore

        snap = firestore.Client().collection(self.env["DT_DEDUP_COLLECTION"]).document(key).get()
        return snap.to_dict()["expiresAt"].timestamp() if snap.exists else None

    # -- outages ----------------------------------------------------------------------
    @contextlib.contextmanager
    def broken(self, part: str):
        """The real client call raises what the SDK raises when the service is down."""
        from google.api_core.exceptions import ServiceUnavailable

        main = self._activate()
        outage = ServiceUnavailable("failed to connect to all addresses")
        if part == "queue":
            # The publisher's RPC fails; its batch thread sets the error on the future.
            with mock.patch.object(main.publisher(), "_gapic_publish", side_effect=outage):
                yield
            return
        store = {"claims": main.claim_store, "state": main.state_store}[part]()
        with mock.patch.object(store, "_client", dead_firestore_client(outage)):
            yield


def dead_firestore_client(outage: Exception):
    """A real Firestore client whose every RPC fails as an unreachable service does."""
    from google.cloud import firestore

    client = firestore.Client()
    api = client._firestore_api
    for rpc in ("commit", "batch_get_documents", "begin_transaction", "rollback", "run_query", "get_document", "batch_write"):
        setattr(api, rpc, mock.Mock(side_effect=outage))
    return client


STAND_IN = GcpStandIn()
