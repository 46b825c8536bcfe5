"""The worker: a Code Engine job (daemon mode, or task mode with ``--once`` on a cron
subscription) that follows the events database's changes feed and runs core's `Worker`.

    python -m ibm_action.worker              follow the feed until SIGTERM
    python -m ibm_action.worker --once       drain what is pending, then exit
    python -m ibm_action.worker --dead-letters [--requeue]
                                             (exit status: how many are dead-lettered, for a cron check)
    python -m ibm_action.worker --stats      the store's size and oldest records

Bounded storage: the worker also removes documents nobody needs any more
(`ibm_action.retention`): every `DT_SWEEP_INTERVAL_S` (default 600) while following the
feed, and after each ``--once`` run.

Delivery, the way a queue with redelivery and a dead-letter queue would do it:
- The feed is read from a checkpoint kept in the `_local/<DT_WORKER_CHECKPOINT>` document
  (not replicated, not itself in the feed), saved after each processed page. A crash
  before the save re-reads the page: core's ledger makes that harmless.
- A document whose outbox is `pending` is delivered to `Worker.process`. Success marks it
  `done`. A failure writes one more attempt and a `retryAt` (exponential backoff from
  `DT_RETRY_DELAY_S`) back into the document: the new revision re-enters the feed, which is
  the redelivery. After `DT_MAX_ATTEMPTS` attempts, or at once for a message that is not a
  DT event, it is marked `dead`.
- A retry not yet due is kept in memory until it is; at start the worker also sweeps the
  pending documents with a Mango query, so retries that a stopped worker (or the previous
  ``--once`` run) left behind are not forgotten.

Run ONE worker per database (a job with one instance): two would deliver the same event
concurrently; the ledger keeps handlers from running twice, but the loser's delivery is
retried as "in flight elsewhere".

Cloudant vs the pouchdb-server stand-in: `last_seq` is an opaque string on Cloudant and an
int on pouchdb-server, so it is only stored and sent back, never compared or parsed; and
pouchdb-server's longpoll ignores `timeout` (it waits for the next change), so the HTTP
read timeout bounds each poll and a read timeout is treated as "no changes".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from core import logs
from core.config import ConfigError, Settings, number_setting
from core.logs import event_log
from core.ports import StoreError
from core.retention import dead_letter_retention_s, sweep_until_done
from core.worker import EventInFlight, PoisonMessage, RetryLater, Worker

from .outbox import DEAD, DONE, INDEX_FIELDS, INDEX_NAME, PENDING, is_pending, outbox_of

DEFAULT_RETRY_DELAY_S = 5.0
DEFAULT_RETRY_MAX_S = 300.0
DEFAULT_LONGPOLL_S = 60.0
DEFAULT_BATCH = 100
DEFAULT_CHECKPOINT = "dt-worker"
MAX_EXIT_COUNT = 125
DEFAULT_SWEEP_INTERVAL_S = 600.0


@dataclass
class WorkerApp:
    """What one worker container builds once."""

    settings: Settings
    worker: Worker
    events: object  # Docs on DT_CLOUDANT_DB
    state_docs: object  # Docs on DT_CLOUDANT_STATE_DB
    outbox: object
    ledger: object
    state: object
    env: dict


def build_worker(env=None) -> WorkerApp:
    from .claims import CloudantClaimStore
    from .cloudant import CloudantConfig, Docs, RevCache, build_service
    from .metrics import RECORDER
    from .outbox import CloudantOutbox
    from .state import CloudantStateStore

    env = dict(os.environ if env is None else env)
    config = CloudantConfig.from_env(env)
    longpoll_s = number_setting(env, "DT_CHANGES_TIMEOUT_S", DEFAULT_LONGPOLL_S)
    service = build_service(config, read_timeout_s=longpoll_s + max(config.timeout_s, 5.0))
    cache = RevCache()
    events = Docs(service, config.db, cache)
    state_docs = Docs(service, config.state_db)
    ledger = CloudantClaimStore(Docs(service, config.db, cache))
    state = CloudantStateStore(state_docs)
    settings = Settings.from_env(env)
    return WorkerApp(
        settings=settings,
        worker=Worker(settings, ledger, state, metrics=RECORDER),
        events=events,
        state_docs=state_docs,
        outbox=CloudantOutbox(Docs(service, config.db, cache)),
        ledger=ledger,
        state=state,
        env=env,
    )


_lock = threading.Lock()
_app: WorkerApp | None = None


def app() -> WorkerApp:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = build_worker()
    return _app


def reset() -> None:
    global _app
    with _lock:
        _app = None


class FeedRunner:
    """Delivers the outbox's pending documents to core's `Worker` (see the module doc)."""

    def __init__(
        self,
        app: WorkerApp,
        *,
        retry_base_s: float | None = None,
        retry_max_s: float = DEFAULT_RETRY_MAX_S,
        batch: int | None = None,
        checkpoint: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        env = app.env
        self.app = app
        self.max_attempts = app.settings.max_attempts
        self.retry_base_s = number_setting(env, "DT_RETRY_DELAY_S", DEFAULT_RETRY_DELAY_S) if retry_base_s is None else retry_base_s
        self.retry_max_s = retry_max_s
        self.batch = batch or int(number_setting(env, "DT_WORKER_BATCH", DEFAULT_BATCH)) or DEFAULT_BATCH
        self.checkpoint = checkpoint or env.get("DT_WORKER_CHECKPOINT", "").strip() or DEFAULT_CHECKPOINT
        self.longpoll_s = number_setting(env, "DT_CHANGES_TIMEOUT_S", DEFAULT_LONGPOLL_S)
        self._clock = clock
        self._since = "0"
        self._checkpoint_rev: str | None = None
        self._later: dict[str, float] = {}  # doc id -> when its retry is due
        from .retention import CloudantSweeper

        self.sweeper = CloudantSweeper(app.events, dead_letter_retention_s(env))
        self.sweep_interval_s = number_setting(env, "DT_SWEEP_INTERVAL_S", DEFAULT_SWEEP_INTERVAL_S)
        self._next_sweep = 0.0

    # --- set-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the databases and the outbox index if missing (idempotent)."""
        self.app.events.ensure_database()
        self.app.state_docs.ensure_database()
        self.app.events.ensure_index(INDEX_NAME, INDEX_FIELDS)
        from .retention import EXPIRY_INDEX_FIELDS, EXPIRY_INDEX_NAME

        self.app.events.ensure_index(EXPIRY_INDEX_NAME, EXPIRY_INDEX_FIELDS)

    def sweep(self, stop: threading.Event | None = None) -> None:
        """Remove what nobody needs any more, in bounded batches paced so ingest's
        writes go first (see `ibm_action.retention`)."""
        # One batch (four queries, one bulk write) a second: within the Lite plan's 5
        # queries per second, and ingest's writes go first.
        result = sweep_until_done(
            self.sweeper, self._clock(), pause_s=1.0, wait=stop.wait if stop is not None else time.sleep
        )
        if result.total:
            event_log(logging.INFO, "removed expired records", more=result.more, **result.removed)

    def _load_checkpoint(self) -> None:
        doc = self.app.events.get_local(self.checkpoint)
        self._since = str(doc.get("since", "0")) if doc else "0"
        self._checkpoint_rev = doc.get("_rev") if doc else None

    def _save_checkpoint(self, since: str) -> None:
        body = {"since": since, "savedAt": self._clock()}
        self._checkpoint_rev = self.app.events.put_local(self.checkpoint, body, self._checkpoint_rev)
        self._since = since

    def _sweep(self) -> None:
        """Remember every pending document: retries left behind before the checkpoint."""
        for doc in self.app.outbox.with_state(PENDING, ["_id", "outbox.retryAt"]):
            retry_at = (doc.get("outbox") or {}).get("retryAt") or 0.0
            self._later[doc["_id"]] = float(retry_at)

    # --- delivery ----------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        return min(self.retry_base_s * 2 ** (attempts - 1), self.retry_max_s)

    def _consider(self, doc: dict) -> None:
        due = float((outbox_of(doc) or {}).get("retryAt") or 0.0)
        if due > self._clock():
            self._later[doc["_id"]] = due
        else:
            self._later.pop(doc["_id"], None)
            self._deliver(doc)

    def _deliver(self, doc: dict) -> None:
        box = outbox_of(doc) or {}
        event_id = box.get("eventId")
        attempts = int(box.get("attempts", 0)) + 1
        try:
            self.app.worker.process(box["body"])
        except EventInFlight:
            # Another worker holds it: not an attempt of ours. Look again after a while.
            self._later[doc["_id"]] = self._clock() + max(self.retry_base_s, 1.0)
            self.app.worker.delivery_failed(dead_lettered=False)
            return
        except (RetryLater, StoreError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, PoisonMessage) or attempts >= self.max_attempts:
                event_log(logging.ERROR, "dead-lettered", eventId=event_id, attempts=attempts, error=error)
                self.app.outbox.settle(doc, DEAD, attempts=attempts, error=error)
                self.app.worker.delivery_failed(dead_lettered=True)
            else:
                retry_at = self._clock() + self._backoff(attempts)
                event_log(logging.WARNING, "will retry", eventId=event_id, attempts=attempts, error=error)
                self.app.outbox.settle(doc, PENDING, attempts=attempts, error=error, retry_at=retry_at)
                self.app.worker.delivery_failed(dead_lettered=False)
            return
        self.app.outbox.settle(doc, DONE, attempts=attempts)

    def _poll(self, longpoll_s: float | None = None) -> bool:
        """Read and deliver one page of the feed. True if the page was not empty."""
        results, last_seq = self.app.events.changes(self._since, self.batch, longpoll_s)
        for change in results:
            doc = change.get("doc")
            if change.get("deleted") or not is_pending(doc):
                continue
            self._consider(doc)
        if results:
            self._save_checkpoint(last_seq)
        return bool(results)

    def _run_due(self) -> bool:
        now = self._clock()
        due = [doc_id for doc_id, at in self._later.items() if at <= now]
        for doc_id in due:
            self._later.pop(doc_id, None)
            doc = self.app.events.get(doc_id)
            if is_pending(doc):
                self._consider(doc)
        return bool(due)

    # --- the two modes -------------------------------------------------------------------

    def drain(self) -> None:
        """``--once``: deliver everything pending and due, then return. Retries that are
        not due yet stay pending for the next run (whose sweep finds them)."""
        self._load_checkpoint()
        self._sweep()
        while True:
            read = self._poll()
            ran = self._run_due()
            if not read and not ran:
                return

    def run_forever(self, stop: threading.Event) -> None:
        self._load_checkpoint()
        self._sweep()
        while not stop.is_set():
            try:
                if self._clock() >= self._next_sweep:
                    self._next_sweep = self._clock() + self.sweep_interval_s
                    self.sweep(stop)
                self._run_due()
                wait = self.longpoll_s
                if self._later:
                    wait = min(wait, max(min(self._later.values()) - self._clock(), 0.0))
                self._poll(longpoll_s=max(wait, 1.0))
            except StoreError as exc:
                event_log(logging.ERROR, "Cloudant unavailable; retrying", error=str(exc))
                stop.wait(min(max(self.retry_base_s, 1.0), 30.0))


def _print_dead_letters(runner: FeedRunner, requeue: bool) -> int:
    letters = runner.app.outbox.dead_letters()
    for letter in letters:
        if requeue:
            runner.app.outbox.requeue(letter["id"])
        print(json.dumps(letter, sort_keys=True))
    if requeue:
        print(f"requeued {len(letters)} dead-lettered events", file=sys.stderr)
        return 0
    print(f"store: {json.dumps(_report(runner), sort_keys=True)}", file=sys.stderr)
    # A cron check alerts on a non-zero status: the number of dead letters, capped where
    # shells start to reserve codes (errors exit 1 or 2 with a message on stderr).
    return min(len(letters), MAX_EXIT_COUNT)


def _report(runner: FeedRunner) -> dict:
    from .retention import store_report

    return store_report(runner.app.events, runner.app.state_docs).to_dict(time.time())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ibm_action.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="drain what is pending, then exit")
    parser.add_argument("--dead-letters", action="store_true", help="list dead-lettered events (JSON lines)")
    parser.add_argument("--requeue", action="store_true", help="with --dead-letters: put them back in the outbox")
    parser.add_argument("--stats", action="store_true", help="print the store's size and oldest records (JSON)")
    args = parser.parse_args(argv)

    logs.configure(os.environ.get("DT_LOG_LEVEL", "INFO"))
    try:
        runner = FeedRunner(app())
        if args.dead_letters:
            return _print_dead_letters(runner, args.requeue)
        if args.stats:
            print(json.dumps({"store": _report(runner)}, indent=2, sort_keys=True))
            return 0
        runner.prepare()
        if args.once:
            runner.drain()
            runner.sweep()
            return 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        runner.run_forever(stop)
        return 0
    except ConfigError as exc:
        print(f"dtconnector worker: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:  # non-zero: Code Engine retries the job run / restarts the daemon
        event_log(logging.ERROR, "worker stopped: Cloudant unavailable", error=str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
