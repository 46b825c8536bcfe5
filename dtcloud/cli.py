"""`dtconnector connector …`, `dtconnector backfill`, `dtconnector stream`: the DT Cloud side.

    dtconnector connector apply  --project P --name NAME --url URL [--events …] [--dry-run]
    dtconnector connector list|show|enable|disable|delete|sync|metrics --project P [--name NAME | --id ID]
    dtconnector connector status --project P --name NAME [--json]     (exit 0 healthy, 1 not, 2 error)
    dtconnector connector wire   --url URL                            (what `make deploy-*` runs)
    dtconnector backfill --project P --since 3d --url URL [--dry-run]
    dtconnector stream   --project P [--types …] [--db PATH]

Credentials as DT's client reads them (DT_SERVICE_ACCOUNT_KEY_ID, _SECRET, _EMAIL);
DT_API_URL and DT_TOKEN_URL override DT's endpoints. The signature secret comes only from
DT_SIGNATURE_SECRET or --secret-file, and is never printed. Every failure is one line on
stderr and exit status 2, never a traceback. Only argument parsing lives here; the work is in
the sibling modules, which import DT's client lazily (`client.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from .client import DTError

PROJECT_HELP = "DT project id (default: $DT_PROJECT_ID)"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--header wants NAME:VALUE, got a value without ':'")
    return name.strip(), value.strip()


def _project(args) -> str:
    project = args.project or os.environ.get("DT_PROJECT_ID", "")
    if not project:
        raise DTError("no project: pass --project P or set DT_PROJECT_ID")
    return project


def _client():
    from .client import Client

    return Client()


def _guarded(func):
    """Run a command: DTError -> its message on stderr and exit 2 (never a traceback)."""
    def run(args) -> int:
        try:
            return func(args)
        except DTError as exc:
            print(f"dtconnector {args.command}: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"dtconnector {args.command}: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:  # a checkpoint or database path we cannot write, say
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"dtconnector {args.command}: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
            return 2
    return run


# --- connector --------------------------------------------------------------------------


def _desired(args):
    from .connectors import Desired, default_events, native_config, read_secret

    if args.events is not None:
        events, why = args.events, "--events"
    else:
        events, why = default_events()
    kind = args.type
    if kind == "HTTP_PUSH":
        if not args.url:
            raise DTError("--url is required for an HTTP_PUSH connector")
        if os.environ.get("DT_SIGNATURE_MODE", "").strip().lower() == "asymmetric":
            secret = ""  # DT signs with its own key (DT-Asymmetric-Signature); no shared secret
        else:
            secret = read_secret(args.secret_file)
            if not secret:
                raise DTError("no signature secret: set DT_SIGNATURE_SECRET or pass --secret-file "
                              "(or DT_SIGNATURE_MODE=asymmetric to rely on DT-Asymmetric-Signature)")
        config = {"url": args.url, "signatureSecret": secret, "headers": dict(args.header)}
    else:
        config = native_config(kind, args)
    desired = Desired(args.name, kind, "USER_DISABLED" if args.disabled else "ACTIVE",
                      sorted(set(events)), sorted(set(args.labels or [])), config)
    return desired, why


def cmd_apply(args) -> int:
    from .connectors import apply

    project = _project(args)
    desired, why = _desired(args)
    client = _client()
    print(f"event filter: {', '.join(desired.events) or 'all types'} ({why})")
    conn, lines = apply(client, project, desired, dry_run=args.dry_run)
    if not lines:
        print(f"connector {desired.name!r} in project {project}: up to date, nothing to change")
        return 0
    print("\n".join(lines))
    if args.dry_run:
        print("(dry run: nothing changed)")
    else:
        from .connectors import connector_id

        print(f"applied: connector {desired.name!r} ({connector_id(conn)}) in project {project}")
    return 0


def cmd_list(args) -> int:
    from .connectors import connector_id, target

    project = _project(args)
    conns = _client().connectors(project)
    if args.json:
        from .connectors import redacted

        print(json.dumps([redacted(c) for c in conns], indent=2))
        return 0
    if not conns:
        print(f"no data connectors in project {project}")
    for c in conns:
        events = ",".join(c.get("events") or []) or "all"
        print(f"{connector_id(c)}  {c.get('displayName', '')!r}  {c.get('type')}  {c.get('status')}  "
              f"{target(c)}  events={events}")
    return 0


def _find(args):
    from .connectors import find

    if not args.name and not args.id:
        raise DTError("name the connector: --name NAME or --id ID")
    client = _client()
    project = _project(args)
    return client, project, find(client, project, args.name, args.id)


def cmd_show(args) -> int:
    from .connectors import redacted

    _, _, conn = _find(args)
    print(json.dumps(redacted(conn), indent=2, sort_keys=True))
    return 0


def _set_status(status: str):
    def cmd(args) -> int:
        from .connectors import connector_id

        client, project, conn = _find(args)
        if conn.get("status") == status:
            print(f"connector {conn.get('displayName')!r} is already {status}")
            return 0
        client.call("PATCH", f"/projects/{project}/dataconnectors/{connector_id(conn)}", body={"status": status})
        print(f"connector {conn.get('displayName')!r}: {conn.get('status')} -> {status}")
        return 0
    return cmd


def cmd_delete(args) -> int:
    from .connectors import connector_id

    client, project, conn = _find(args)
    label = f"{conn.get('displayName')!r} ({connector_id(conn)}) in project {project}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise DTError(f"refusing to delete connector {label} without --yes (no terminal to ask)")
        answer = input(f"delete connector {label}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not deleted")
            return 1
    client.call("DELETE", f"/projects/{project}/dataconnectors/{connector_id(conn)}")
    print(f"deleted connector {label}")
    return 0


def cmd_sync(args) -> int:
    from .connectors import connector_id

    client, project, conn = _find(args)
    client.call("POST", f"/projects/{project}/dataconnectors/{connector_id(conn)}:sync")
    print(f"sync requested: DT re-sends the latest event of each type for every device through "
          f"{conn.get('displayName')!r}")
    return 0


def cmd_metrics(args) -> int:
    from .connectors import connector_id

    client, project, conn = _find(args)
    metrics = client.call("GET", f"/projects/{project}/dataconnectors/{connector_id(conn)}:metrics")
    m = metrics.get("metrics", {})
    if args.json:
        print(json.dumps(m))
    else:
        print(f"last 3 h: successCount {m.get('successCount', 0)}  errorCount {m.get('errorCount', 0)}  "
              f"latency99p {m.get('latency99p', '-')}")
    return 0


def cmd_status(args) -> int:
    from .status import check

    if not args.name and not args.id:
        raise DTError("name the connector: --name NAME or --id ID")
    health = check(_client(), _project(args), args.name, args.id, args.max_error_rate)
    print(json.dumps(health.to_dict(), indent=2) if args.json else health.verdict())
    return health.exit_code


def cmd_wire(args) -> int:
    from .wire import wire

    return wire(args)


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help=PROJECT_HELP)
    p.add_argument("--name", help="the connector's display name")
    p.add_argument("--id", help="the connector's id (instead of --name)")


def add_connector_parser(sub) -> None:
    conn = sub.add_parser("connector", help="manage the project's DT Data Connector (needs the `dt` extra)",
                          description="Create, inspect and check DT Data Connectors through DT's REST API.")
    csub = conn.add_subparsers(dest="action", required=True)

    ap = csub.add_parser("apply", help="create or update the connector named NAME (prints the diff)")
    ap.add_argument("--project", help=PROJECT_HELP)
    ap.add_argument("--name", required=True, help="display name (the connector is found by it)")
    ap.add_argument("--type", default="HTTP_PUSH", choices=["HTTP_PUSH", "AWS_SQS", "GOOGLE_CLOUD_PUBSUB",
                                                            "AZURE_SERVICE_BUS", "AZURE_EVENT_HUB"])
    ap.add_argument("--url", help="the receiver's URL (HTTP_PUSH; DT requires https)")
    ap.add_argument("--events", type=_csv, default=None,
                    help="comma-separated event types (default: what your DT_HANDLERS @on name; all for '*')")
    ap.add_argument("--labels", type=_csv, default=None, help="comma-separated label keys to include")
    ap.add_argument("--header", type=_header, action="append", default=[], metavar="NAME:VALUE",
                    help="custom header DT sends (repeatable; values are never printed)")
    ap.add_argument("--disabled", action="store_true", help="create/leave it USER_DISABLED")
    ap.add_argument("--secret-file", help="read the signature secret from this file (default: $DT_SIGNATURE_SECRET)")
    ap.add_argument("--dry-run", action="store_true", help="only print what would change")
    native = ap.add_argument_group("native queue connectors (--type other than HTTP_PUSH)")
    native.add_argument("--sqs-queue-url", help="AWS_SQS: the queue URL")
    native.add_argument("--aws-role-arn", help="AWS_SQS: the role DT assumes")
    native.add_argument("--audience", help="AWS_SQS / GOOGLE_CLOUD_PUBSUB: the identity token audience")
    native.add_argument("--pubsub-topic", help="GOOGLE_CLOUD_PUBSUB: projects/<p>/topics/<t>")
    native.add_argument("--azure-url", help="AZURE_SERVICE_BUS (sb://ns/topic) / AZURE_EVENT_HUB: the URL")
    native.add_argument("--azure-tenant-id", help="AZURE_*: tenant id of the app DT authenticates as")
    native.add_argument("--azure-client-id", help="AZURE_*: client id of the app DT authenticates as")
    ap.set_defaults(func=_guarded(cmd_apply))

    ls = csub.add_parser("list", help="the project's connectors")
    ls.add_argument("--project", help=PROJECT_HELP)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_guarded(cmd_list))

    for action, func, text in (
        ("show", cmd_show, "one connector as JSON (secrets masked)"),
        ("enable", _set_status("ACTIVE"), "set ACTIVE (does not backfill: see `dtconnector backfill`)"),
        ("disable", _set_status("USER_DISABLED"), "set USER_DISABLED"),
        ("sync", cmd_sync, "ask DT to re-send the latest event of each type for every device"),
    ):
        p = csub.add_parser(action, help=text)
        _add_target(p)
        p.set_defaults(func=_guarded(func))

    de = csub.add_parser("delete", help="delete a connector (asks unless --yes)")
    _add_target(de)
    de.add_argument("--yes", action="store_true")
    de.set_defaults(func=_guarded(cmd_delete))

    me = csub.add_parser("metrics", help="DT's delivery counts and p99 latency, last 3 h")
    _add_target(me)
    me.add_argument("--json", action="store_true")
    me.set_defaults(func=_guarded(cmd_metrics))

    st = csub.add_parser("status", help="one health verdict: exit 0 healthy, 1 degraded/disabled, 2 error")
    _add_target(st)
    st.add_argument("--json", action="store_true")
    st.add_argument("--max-error-rate", type=float, default=0.1,
                    help="share of failed deliveries still healthy (default 0.1)")
    st.set_defaults(func=_guarded(cmd_status))

    wi = csub.add_parser("wire", help="after a deploy: apply + sync + wait for deliveries (or print the steps)")
    wi.add_argument("--url", required=True, help="the deployed receiver's URL")
    wi.add_argument("--project", help=PROJECT_HELP)
    wi.add_argument("--name", default=os.environ.get("DT_CONNECTOR_NAME", "dtconnector"),
                    help="connector display name (default: $DT_CONNECTOR_NAME or 'dtconnector')")
    wi.add_argument("--wait", type=float, default=float(os.environ.get("DT_WIRE_WAIT_S") or 60),
                    help="seconds to wait for deliveries (default: $DT_WIRE_WAIT_S or 60)")
    wi.add_argument("--secret-file", help="read the signature secret from this file")
    wi.set_defaults(func=_guarded(cmd_wire))


# --- backfill ---------------------------------------------------------------------------


def cmd_backfill(args) -> int:
    from .backfill import Plan, run
    from .connectors import find, read_secret
    from .timeparse import HISTORY_DAYS, parse_when

    project = _project(args)
    now = datetime.now(timezone.utc)
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as exc:
        raise DTError(str(exc)) from None
    if since >= until:
        raise DTError("--since must be before --until")
    if (now - since).total_seconds() > HISTORY_DAYS * 86400:
        raise DTError(f"--since is more than {HISTORY_DAYS} days ago: DT keeps {HISTORY_DAYS} days of history")
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise DTError("--url must be an http:// or https:// URL")
    secret = read_secret(args.secret_file)
    if not secret and not args.dry_run:
        raise DTError("no signature secret: set DT_SIGNATURE_SECRET or pass --secret-file (backfilled events are "
                      "signed with X-Dt-Signature; the receiver must accept it, i.e. mode either/secret)")
    client = _client()
    labels = args.labels
    if labels is None and args.connector:
        labels = find(client, project, args.connector).get("labels") or []
    plan = Plan(project, since, until, args.url, secret, devices=args.devices or [], types=args.types or [],
                label_keys=labels or [], checkpoint=args.checkpoint or f".dtconnector/backfill-{project}.json",
                dry_run=args.dry_run, concurrency=args.concurrency, rate=args.rate, max_age_s=args.max_age,
                window_text=f"{args.since}..{args.until or ''}")
    summary = run(client, plan)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(summary)))
    else:
        print(summary.text())
    return 1 if summary.failed else 0


def add_backfill_parser(sub) -> None:
    p = sub.add_parser("backfill", help="re-deliver events from DT's history (after an outage)",
                       description="Fetch each device's event history for a window and deliver it to the "
                                   "receiver signed like DT. Resumable; --dry-run counts only.")
    p.add_argument("--project", help=PROJECT_HELP)
    p.add_argument("--since", required=True, help="start: RFC 3339 or an age like 3d, 12h")
    p.add_argument("--until", default=None, help="end (default: now)")
    p.add_argument("--url", required=True, help="the receiver's URL")
    p.add_argument("--devices", type=_csv, default=None, help="comma-separated device ids (default: all)")
    p.add_argument("--types", type=_csv, default=None, help="comma-separated event types (default: all)")
    p.add_argument("--labels", type=_csv, default=None, help="label keys to include in each body")
    p.add_argument("--connector", help="take the label keys from this connector (display name)")
    p.add_argument("--secret-file", help="signature secret file (default: $DT_SIGNATURE_SECRET)")
    p.add_argument("--checkpoint", help="progress file (default .dtconnector/backfill-<project>.json)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    p.add_argument("--max-age", type=float, default=600.0, help="give an event up after retrying this long (s)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_guarded(cmd_backfill))


# --- stream -----------------------------------------------------------------------------


def cmd_stream(args) -> int:
    from local_receiver.app import AlreadyRunning

    from .stream import Follower, local_pipeline

    project = _project(args)
    client = _client()
    try:
        app, deliver = local_pipeline(args.db)
    except AlreadyRunning as exc:
        raise DTError(str(exc)) from None
    stop = threading.Event()
    follower = Follower(client, project, deliver, types=args.types, label_keys=args.labels,
                        ping_interval_s=args.ping_interval)
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    print(f"stream: feeding {args.db} (dtconnector state --db {args.db}); Ctrl-C stops", file=sys.stderr)
    try:
        follower.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        time.sleep(0.2)
        app.stop()
        s = follower.stats
        print(f"stream: {s.streamed} streamed, {s.backfilled} backfilled after {s.reconnects} reconnects; "
              f"accepted {s.accepted}, duplicates {s.duplicates}, rejected {s.rejected}", file=sys.stderr)
    return 0


def add_stream_parser(sub) -> None:
    from local_receiver.app import DEFAULT_DB

    p = sub.add_parser("stream", help="follow DT's event stream into the local receiver (no tunnel)")
    p.add_argument("--project", help=PROJECT_HELP)
    p.add_argument("--types", type=_csv, default=None, help="comma-separated event types (default: all)")
    p.add_argument("--labels", type=_csv, default=None, help="label keys to include in each body")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--ping-interval", type=float, default=10.0,
                   help="seconds between DT's keep-alives; silence for twice this reconnects (default 10)")
    p.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_guarded(cmd_stream))


def add_parsers(sub) -> None:
    add_connector_parser(sub)
    add_backfill_parser(sub)
    add_stream_parser(sub)
