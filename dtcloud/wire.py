"""After a deploy, point DT at it: `connector apply` + `sync`, then wait for DT's deliveries.

Why it waits on metrics: a deploy is only done when DT can actually deliver to it (URL
reachable, certificate accepted, secret matching). `:sync` makes DT send the latest event of
each type now, and `successCount` rising proves the whole path. One verdict line; exit 0 when
DT delivered, 1 when it did not within the wait, 2 on errors. Without DT credentials it
prints the manual steps instead (exit 0: wiring is optional).
"""

from __future__ import annotations

import os
import time

from .client import CREDENTIAL_VARS, DTError, have_credentials

POLL_S = 1.0


def manual_steps(url: str, name: str) -> str:
    return f"""DT is not wired automatically (set DT_PROJECT_ID and {', '.join(CREDENTIAL_VARS)} to do it).
Manual steps, in DT Studio > your project > API Integrations > Data Connectors > Create new:
  1. type HTTP Push, name {name!r}, endpoint URL {url}
  2. signature secret: the same value as DT_SIGNATURE_SECRET of this deployment
  3. event types: those your handlers use (`dtconnector connector apply --dry-run` prints them)
  4. save, then "Sync" (or: dtconnector connector sync --project P --name {name!r}) and check
     `dtconnector connector status --project P --name {name!r}`"""


def wire(args) -> int:
    from .connectors import Desired, apply, connector_id, default_events, read_secret

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
    events, why = default_events()
    client = Client()
    desired = Desired(args.name, "HTTP_PUSH", "ACTIVE", events, [], {"url": args.url, "signatureSecret": secret,
                                                                    "headers": {}})
    conn, lines = apply(client, project, desired)
    for line in lines:
        print(line)
    cid = connector_id(conn)
    base = f"/projects/{project}/dataconnectors/{cid}"
    before = int(client.call("GET", base + ":metrics").get("metrics", {}).get("successCount", 0))
    client.call("POST", base + ":sync")
    deadline = time.monotonic() + args.wait
    now, metrics = before, {}
    while time.monotonic() < deadline:
        time.sleep(POLL_S if args.wait >= 10 else 0.2)
        metrics = client.call("GET", base + ":metrics").get("metrics", {})
        now = int(metrics.get("successCount", 0))
        if now > before:
            print(f"wire-dt: OK: DT delivered {now - before} events to {args.url} through connector "
                  f"{args.name!r} ({cid}); event filter: {', '.join(events) or 'all'} ({why})")
            return 0
    errors = int(metrics.get("errorCount", 0)) if now == before else 0
    print(f"wire-dt: NOT CONFIRMED: connector {args.name!r} ({cid}) points at {args.url}, but DT reported no "
          f"successful delivery within {args.wait:g} s ({errors} errors); check "
          f"`dtconnector connector status --project {project} --name {args.name!r}`")
    return 1
