"""After a deploy, point DT at it: set the connector's URL and secret, `sync`, wait for deliveries.

Why it changes so little: a deploy runs again and again, and between two deploys the user
edits the connector in DT Studio. Wiring owns the URL and the signature secret (the deploy
made both) and, only while DT has none, the event filter (from the handlers). Custom
headers, labels and a disabled status are the user's: kept, and a disabled connector is not
re-enabled (one line says so and how).

Why it waits on metrics: a deploy is only done when DT can actually deliver to it (URL
reachable, certificate accepted, secret matching). `:sync` makes DT send the latest event of
each type now, and `successCount` rising proves the whole path. One verdict line; exit 0 when
DT delivered (or the connector is disabled on purpose), 1 when it did not within the wait, 2
on errors. Without DT credentials it prints the manual steps instead (exit 0: wiring is
optional).
"""

from __future__ import annotations

import os
import shlex
import time

from .client import CREDENTIAL_VARS, DTError, have_credentials
from .text import printable, quoted

POLL_S = 1.0


def manual_steps(url: str, name: str) -> str:
    return f"""DT is not wired automatically (set DT_PROJECT_ID and {', '.join(CREDENTIAL_VARS)} to do it).
Manual steps, in DT Studio > your project > API Integrations > Data Connectors > Create new:
  1. type HTTP Push, name {quoted(name)}, endpoint URL {url}
  2. signature secret: the same value as DT_SIGNATURE_SECRET of this deployment
  3. event types: those your handlers use (`dtconnector connector apply --dry-run` prints them)
  4. save, then "Sync" (or: dtconnector connector sync --project P --name {quoted(name)}) and check
     `dtconnector connector status --project P --name {quoted(name)}`"""


def wire(args) -> int:
    from .connectors import Change, apply, connector_id, default_events, find, push_url_problem, read_secret

    project = args.project or os.environ.get("DT_PROJECT_ID", "")
    if not project or not have_credentials():
        print(manual_steps(args.url, args.name))
        return 0
    from .client import Client

    if os.environ.get("DT_SIGNATURE_MODE", "").strip().lower() == "asymmetric":
        secret = ""
    else:
        secret = read_secret(args.secret_file)
        if not secret:
            raise DTError("no signature secret to give DT: set DT_SIGNATURE_SECRET (the deployment's own)")
    client = Client()
    problem = push_url_problem(args.url, client.base_url)
    if problem:
        raise DTError(problem)
    handler_events, why = default_events()
    current = find(client, project, args.name, required=False)
    set_events = current is None or not current.get("events")
    change = Change(args.name, url=args.url, secret=secret, events=handler_events if set_events else None)
    given = {"httpConfig.url", "httpConfig.signatureSecret"} | ({"events"} if set_events else set())
    result = apply(client, project, change, current, default_events=handler_events, given=given)
    for line in result.changes:
        print(line)
    if result.kept:
        print(result.kept)
    conn = result.connector or {}
    name = printable(args.name)
    if not set_events:
        have = set(conn.get("events") or [])
        missing = sorted(set(handler_events) - have) if handler_events else []
        if missing:
            print(f"wire-dt: note: the connector's event filter (set in DT) leaves out {', '.join(missing)}, which "
                  f"your handlers use ({why}); kept: `dtconnector connector apply --name '{name}' --events "
                  f"{','.join(sorted(have | set(handler_events)))}` adds them")
    cid = connector_id(conn)
    if conn.get("status") != "ACTIVE":
        then = " (then `dtconnector backfill` the gap)" if conn.get("status") == "SYSTEM_DISABLED" else ""
        print(f"wire-dt: connector '{name}' ({printable(cid)}) points at {printable(args.url)}, but the connector "
              f"is disabled in DT ({printable(conn.get('status'))}); not enabling it: run `dtconnector connector "
              f"enable --name {shlex.quote(name)}`{then}")
        return 0
    base = f"/projects/{project}/dataconnectors/{cid}"
    before = _successes(client, base)
    client.call("POST", base + ":sync")
    deadline = time.monotonic() + args.wait
    now, errors = before, 0
    while time.monotonic() < deadline:
        time.sleep(POLL_S if args.wait >= 10 else 0.2)
        metrics = client.call("GET", base + ":metrics").get("metrics")
        metrics = metrics if isinstance(metrics, dict) else {}
        now, errors = _int(metrics.get("successCount")), _int(metrics.get("errorCount"))
        if now > before:
            print(f"wire-dt: OK: DT delivered {now - before} events to {printable(args.url)} through connector "
                  f"'{name}' ({printable(cid)}); event filter: {', '.join(conn.get('events') or []) or 'all'}")
            return 0
    print(f"wire-dt: NOT CONFIRMED: connector '{name}' ({printable(cid)}) points at {printable(args.url)}, but DT "
          f"reported no successful delivery within {args.wait:g} s ({errors} errors); check "
          f"`dtconnector connector status --project {printable(project)} --name '{name}'`")
    return 1


def _successes(client, base: str) -> int:
    metrics = client.call("GET", base + ":metrics").get("metrics")
    return _int(metrics.get("successCount")) if isinstance(metrics, dict) else 0


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
