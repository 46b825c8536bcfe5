"""POST signed event bodies to a receiver, as DT's connector does, and say at once what went wrong.

Used by `dtconnector backfill` (events from DT's history) and by the emulator's `send`.

- One pool of keep-alive connections for the whole command (`Engine`), many requests in
  flight (`concurrency` threads, each borrowing a connection for the batch), batch after
  batch: backfill sends a device's history 50 events at a time through the same pool.
- An event is acknowledged by a 2xx within `timeout_s` (DT: 10 s). A 5xx, a timeout or a
  connection error is retried with exponential backoff and jitter until `max_age_s` after the
  event's first try, then given up; so are 408 and 429, which ask for exactly that. Any other
  4xx is final: the receiver will refuse the event again (a wrong secret, a wrong path), so it
  stops the whole run at once, unless the policy is DT's patience (`retry_refused`: every
  non-2xx retried until `max_age_s`, as `send --patient`).
- The first answer of each kind that is not a 2xx is reported the moment it happens, with its
  status and the receiver's reason (`401: token signature is invalid — check the secret`), or
  the URL and the network error (`cannot connect to http://…: connection refused`).
- `Tally` is the true account when a run ends early (a 4xx, Ctrl-C): every event is in exactly
  one of acknowledged, refused, given up, unanswered (tried, stopped before an answer counted)
  or not tried.

Standard library only (`http.client`): `send` works without any extra installed.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from queue import Empty, LifoQueue
from typing import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from core.times import format_duration

from .text import printable, quoted

DT_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer we read (its reason); the rest is dropped
RETRY_LATER = (408, 429)  # 4xx answers that ask to be retried (request timeout, too many requests)
HINTS = {
    401: "check the secret",
    403: "check the secret and any header the receiver or its proxy requires",
    404: "check the URL's path",
    405: "check the URL: it does not take POST",
    413: "the receiver's body limit (DT_MAX_BODY_BYTES) is below this event's size",
}


@dataclass
class Policy:
    concurrency: int = 8
    timeout_s: float = DT_TIMEOUT_S
    max_age_s: float = 600.0  # retry an event this long after its first try, then give it up
    retry_base_s: float = 1.0  # first retry delay, doubled per attempt up to retry_max_s
    retry_max_s: float = 300.0
    rate: float | None = None  # new events per second; None: as fast as the receiver answers
    retry_refused: bool = False  # DT's patience: retry 4xx too (else the first 4xx stops the run)
    stop_on_give_up: bool = False  # an event given up after max_age_s stops the run (backfill)


@dataclass
class Item:
    """One delivery: a body (and a caller's label for it, e.g. its event id)."""

    body: bytes
    label: str | None = None
    born: float = 0.0  # monotonic time of its first scheduled try
    attempts: int = 0
    last: str = ""  # the last answer: "503", "timeout", "connection refused"
    done: bool = False


@dataclass
class Answer:
    status: str  # "202", "401", "timeout", "error" (no HTTP answer)
    reason: str  # the receiver's reason, or the network error; printable
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status.isdigit() and 200 <= int(self.status) < 300

    @property
    def kind(self) -> str:
        """The status, or for no HTTP answer the network error: how a summary counts it."""
        return self.reason if self.status == "error" else self.status

    @property
    def refused(self) -> bool:
        return self.status.isdigit() and 400 <= int(self.status) < 500 and int(self.status) not in RETRY_LATER


@dataclass
class Tally:
    """Counts over every batch an engine ran; each event ends in exactly one bucket."""

    url: str
    events: int = 0  # deliveries handed to the engine
    requests: int = 0  # HTTP attempts made
    retried: int = 0  # attempts that repeated a failed one
    accepted: int = 0  # events acknowledged with 202 (new to the receiver)
    duplicates: int = 0  # events acknowledged with another 2xx (the receiver had them)
    refused: dict = field(default_factory=dict)  # status -> events ended by a 4xx
    given_up: dict = field(default_factory=dict)  # last answer ("503", "connection refused") -> events
    unanswered: dict = field(default_factory=dict)  # last answer -> events tried, stopped before an ack
    not_tried: int = 0
    statuses: dict = field(default_factory=dict)  # every answer: "202", "503", "timeout", "error"
    errors: dict = field(default_factory=dict)  # network error -> count ("connection refused")
    latencies_s: list = field(default_factory=list, repr=False)  # of 2xx answers
    given_up_labels: list = field(default_factory=list)
    stopped: str = ""  # why the run stopped early ("401: …"); "" if it did not
    interrupted: bool = False
    elapsed_s: float = 0.0

    @property
    def acknowledged(self) -> int:
        return self.accepted + self.duplicates

    @property
    def unacknowledged(self) -> int:
        return self.events - self.acknowledged

    def outcome(self) -> str:
        """`accepted 3, duplicates 0; refused 1 (401: 1); not tried 63`: every bucket that is not empty."""
        parts = [f"accepted {self.accepted}, duplicates {self.duplicates}"]
        for name, counts in (("refused", self.refused), ("given up", self.given_up),
                             ("unanswered when stopped", self.unanswered)):
            if counts:
                detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                parts.append(f"{name} {sum(counts.values())} ({detail})")
        if self.not_tried:
            parts.append(f"not tried {self.not_tried}")
        return "; ".join(parts)

    def answers(self) -> str:
        """`202: 10, 503: 4, connection refused: 2`."""
        out = [f"{k}: {v}" for k, v in sorted(self.statuses.items()) if k != "error"]
        out += [f"{k}: {v}" for k, v in sorted(self.errors.items())]
        return ", ".join(out) or "-"


@dataclass
class Batch:
    total: int
    acknowledged: int

    @property
    def complete(self) -> bool:
        return self.acknowledged == self.total


class _Scheduler:
    """Items by due time; `get` blocks until one is due, None once all are done or stopped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Item]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self.outstanding = 0
        self.stopped = False

    def add(self, item: Item, due: float, new: bool = True) -> None:
        with self._cond:
            self._seq += 1
            if new:
                self.outstanding += 1
            heapq.heappush(self._heap, (due, self._seq, item))
            self._cond.notify()

    def get(self) -> Item | None:
        with self._cond:
            while True:
                if self.stopped or self.outstanding == 0:
                    return None
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(min(wait, 0.5))
                else:
                    self._cond.wait(0.5)

    def finished(self) -> None:
        with self._cond:
            self.outstanding -= 1
            if self.outstanding == 0:
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


def check_url(url: str) -> tuple[bool, str, int | None, str]:
    """(https?, host, port, path with query) of an http(s) URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url must be an http:// or https:// URL, got {quoted(url)}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--url has an invalid port: {quoted(url)}") from None
    return parts.scheme == "https", parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class Engine:
    """Deliveries to one URL under one `Policy`, over one connection pool, batch after batch.

    `sign(body)` returns the signature headers of one attempt (called per attempt: a retried
    event is signed afresh); `report(line)` receives the first answer of each failing kind,
    at once, from whichever thread saw it.
    """

    def __init__(self, url: str, policy: Policy, *, sign: Callable[[bytes], Mapping[str, str]] | None = None,
                 headers: Sequence[tuple[str, str]] = (), report: Callable[[str], None] | None = None,
                 hints: Mapping[int, str] = HINTS, stop_note: str = "", user_agent: str = "dtconnector"):
        self._https, self._host, self._port, self._path = check_url(url)
        self.url = url
        self.policy = policy
        self._sign = sign
        self._headers = {"Content-Type": "application/json", "User-Agent": user_agent, **dict(headers)}
        self._report = report or (lambda line: None)
        self._hints = dict(hints)
        self._stop_note = stop_note  # e.g. " (--patient retries a 4xx as DT does)"
        self._reported: set[str] = set()
        self._pool: LifoQueue = LifoQueue()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.tally = Tally(url)

    @property
    def stopped(self) -> bool:
        return bool(self.tally.stopped) or self.tally.interrupted

    # --- one attempt ------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        try:
            return self._pool.get_nowait()
        except Empty:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            return cls(self._host, self._port, timeout=self.policy.timeout_s)

    def attempt(self, conn: http.client.HTTPConnection, body: bytes) -> Answer:
        headers = dict(self._headers)
        if self._sign is not None:
            headers.update(self._sign(body))
        start = time.perf_counter()
        try:
            conn.request("POST", self._path, body, headers)
            response = conn.getresponse()
            data = response.read(MAX_ANSWER_BYTES)
            if response.will_close or not response.isclosed():
                conn.close()  # the server closes, or sent more than we read: start afresh
            status = str(response.status)
            reason = "" if 200 <= response.status < 300 else _reason(data, response.reason)
        except (socket.timeout, TimeoutError):
            conn.close()
            status, reason = "timeout", f"no answer within {self.policy.timeout_s:g} s"
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            status, reason = "error", _network_error(exc)
        return Answer(status, reason, time.perf_counter() - start)

    def _backoff(self, attempts: int) -> float:
        ceiling = min(self.policy.retry_max_s, self.policy.retry_base_s * 2 ** (attempts - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _say_once(self, answer: Answer, action: str) -> None:
        key = answer.status if answer.status != "error" else f"error:{answer.reason}"
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        self._report(f"{self.describe(answer)}; {action}")

    def describe(self, answer: Answer) -> str:
        """`401: token signature is invalid — check the secret` / `cannot connect to URL: refused`."""
        if answer.status == "error":
            return f"cannot deliver to {self.url}: {answer.reason}"
        if answer.status == "timeout":
            return f"{self.url} gave no answer within {self.policy.timeout_s:g} s"
        hint = self._hints.get(int(answer.status))
        return f"{answer.status}: {answer.reason or 'no reason given'}" + (f" — {hint}" if hint else "")

    # --- the loop ---------------------------------------------------------------------

    def _worker(self, sched: _Scheduler) -> None:
        conn = self._connection()
        t, p = self.tally, self.policy
        try:
            while True:
                item = sched.get()
                if item is None:
                    return
                item.attempts += 1
                answer = self.attempt(conn, item.body)
                now = time.monotonic()
                refused_for_good = answer.refused and not p.retry_refused
                too_old = not answer.ok and now - item.born >= p.max_age_s
                with self._lock:
                    t.requests += 1
                    t.statuses[answer.status] = t.statuses.get(answer.status, 0) + 1
                    if answer.status == "error":
                        t.errors[answer.reason] = t.errors.get(answer.reason, 0) + 1
                    if item.attempts > 1:
                        t.retried += 1
                    item.last = answer.kind
                    if answer.ok:
                        t.latencies_s.append(answer.seconds)
                        if answer.status == "202":
                            t.accepted += 1
                        else:
                            t.duplicates += 1
                        item.done = True
                    elif refused_for_good:
                        t.refused[answer.status] = t.refused.get(answer.status, 0) + 1
                        item.done = True
                        if not t.stopped:
                            t.stopped = self.describe(answer)
                    elif too_old:
                        t.given_up[answer.kind] = t.given_up.get(answer.kind, 0) + 1
                        if item.label:
                            t.given_up_labels.append(item.label)
                        item.done = True
                        if p.stop_on_give_up and not t.stopped:
                            t.stopped = (f"{self.describe(answer)}, still after {_age(p.max_age_s)} "
                                         "(--max-age)")
                if answer.ok:
                    sched.finished()
                elif refused_for_good:
                    self._say_once(answer, "stopping" + self._stop_note)
                    sched.finished()
                    sched.stop()
                elif too_old:
                    sched.finished()
                    if p.stop_on_give_up:
                        sched.stop()
                else:
                    self._say_once(answer, f"retrying each event for up to {_age(p.max_age_s)}")
                    due = min(now + self._backoff(item.attempts), item.born + p.max_age_s)
                    sched.add(item, due, new=False)
        finally:
            self._pool.put(conn)

    def run(self, bodies: Sequence[bytes], labels: Sequence[str | None] | None = None,
            on_start: Callable[[], None] | None = None) -> Batch:
        """Deliver `bodies` (in this order, `rate` permitting); returns when every one ended or
        the run stopped (a 4xx, a give-up under `stop_on_give_up`, Ctrl-C: see `tally`)."""
        return self.run_items([Item(b, labels[i] if labels else None) for i, b in enumerate(bodies)], on_start)

    def run_items(self, items: Sequence[Item], on_start: Callable[[], None] | None = None) -> Batch:
        """`run` for items the caller keeps (to read each one's `attempts` and `done` after)."""
        t = self.tally
        t.events += len(items)
        if self.stopped:
            t.not_tried += len(items)
            return Batch(len(items), 0)
        sched = _Scheduler()
        start = time.monotonic()
        for i, item in enumerate(items):
            item.born = start + (i / self.policy.rate if self.policy.rate else 0.0)
            sched.add(item, item.born)
        threads = [threading.Thread(target=self._worker, args=(sched,), name=f"dt-delivery-{i}", daemon=True)
                   for i in range(max(1, min(self.policy.concurrency, len(items))))]
        if on_start:
            on_start()
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:
            t.interrupted = True
            sched.stop()
            for thread in threads:
                thread.join(self.policy.timeout_s + 1)
        t.elapsed_s += time.monotonic() - start
        acknowledged = 0
        with self._lock:
            for item in items:
                if item.done:
                    if item.last.isdigit() and 200 <= int(item.last) < 300:
                        acknowledged += 1
                elif item.attempts == 0:
                    t.not_tried += 1
                else:
                    t.unanswered[item.last] = t.unanswered.get(item.last, 0) + 1
        return Batch(len(items), acknowledged)

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except Empty:
                return


def _age(seconds: float) -> str:
    return format_duration(seconds)


def _reason(data: bytes, fallback: str) -> str:
    """The receiver's reason: `reason`, `error` or `message` of a JSON answer, else its text."""
    text = data.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        for key in ("reason", "error", "message"):
            if isinstance(doc.get(key), str) and doc[key]:
                return printable(doc[key], 200)
    first = text.strip().splitlines()[0] if text.strip() else fallback
    return printable(first, 200)


def _network_error(exc: BaseException) -> str:
    """`ConnectionRefusedError(111, …)` -> `connection refused`; the error's name otherwise."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({printable(exc.strerror or exc)})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    if isinstance(exc, OSError) and exc.strerror:
        return printable(exc.strerror.lower())
    return printable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
