"""One health verdict for a connector, for people and for cron/monitors.

Why these three inputs: a connector fails a receiver in three ways DT itself won't shout about:
it is disabled (by a user, or by DT after ~5 days of errors, after which events are lost for
good), DT's deliveries are failing (metrics over the last 3 h), or the URL does not answer.
Exit status: 0 healthy, 1 degraded or disabled, 2 usage/credential errors (raised as DTError).
"""

from __future__ import annotations

import http.client
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from .client import Client
from .connectors import connector_id, find, target
from .text import printable

HEALTHY, DEGRADED = 0, 1


@dataclass
class Health:
    project: str
    name: str
    id: str
    type: str
    status: str
    url: str
    success_count: int
    error_count: int
    latency_99p: str
    url_answers: bool | None  # None: nothing to probe (a queue connector)
    url_detail: str
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return DEGRADED if self.problems else HEALTHY

    def verdict(self) -> str:
        head = "healthy" if not self.problems else "DEGRADED" if self.status == "ACTIVE" else self.status
        detail = (f"{self.status}; last 3 h: {self.success_count} delivered, {self.error_count} failed, "
                  f"p99 {self.latency_99p}; URL " + ("answers" if self.url_answers else
                                                    "not probed" if self.url_answers is None else "does NOT answer")
                  + f" ({self.url_detail})")
        lines = [f"{self.name} ({self.id}): {head}: {detail}"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["healthy"] = not self.problems
        return d


def probe(url: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Does the URL answer HTTP within DT's 10 s? Any answer below 500 counts (our receivers
    answer an unsigned GET with 405); 5xx means the receiver itself is failing."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = cls(parts.hostname, parts.port, timeout=timeout_s)
        conn.request("GET", parts.path or "/", headers={"User-Agent": "dtconnector-status"})
        status = conn.getresponse().status
        conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return False, type(exc).__name__
    return status < 500, f"HTTP {status}"


def check(client: Client, project: str, name: str | None, ident: str | None = None,
          max_error_rate: float = 0.1) -> Health:
    conn = find(client, project, name, ident)
    cid = connector_id(conn)
    metrics = client.call("GET", f"/projects/{project}/dataconnectors/{cid}:metrics").get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    ok, errors = _count(metrics.get("successCount")), _count(metrics.get("errorCount"))
    url = target(conn)
    if conn.get("type") == "HTTP_PUSH" and url:
        answers, detail = probe(url)
    else:
        answers, detail = None, "queue connector"
    h = Health(project, printable(conn.get("displayName", "")), printable(cid), printable(conn.get("type", "")),
               printable(conn.get("status", "")), printable(url), ok, errors,
               printable(metrics.get("latency99p", "-"), 40), answers, detail)
    if h.status == "SYSTEM_DISABLED":
        h.problems.append("DT disabled it after repeated delivery failures: fix the receiver, "
                          "`dtconnector connector enable`, then backfill the gap (`dtconnector backfill`)")
    elif h.status == "USER_DISABLED":
        h.problems.append("disabled by a user: events are not delivered (`dtconnector connector enable`)")
    elif h.status != "ACTIVE":
        h.problems.append(f"unknown status {h.status}")
    if errors and errors > max_error_rate * (ok + errors):
        h.problems.append(f"{errors} of {ok + errors} deliveries failed in the last 3 h (DT retries for 12 h)")
    if answers is False:
        h.problems.append(f"the URL does not answer ({detail})")
    return h


def _count(value) -> int:
    """DT's counts (JSON numbers, or strings as protobuf's JSON writes 64-bit integers)."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
