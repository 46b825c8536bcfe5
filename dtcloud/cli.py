"""`dtconnector connector …`, `dtconnector backfill`, `dtconnector stream`: the DT Cloud side.

    dtconnector connector apply  --project P --name NAME [--url URL] [--events …] [--dry-run]
    dtconnector connector list|show|enable|disable|delete|sync|metrics --project P [--name NAME | --id ID]
    dtconnector connector status --project P --name NAME [--json]     (exit 0 healthy, 1 not, 2 error)
    dtconnector connector wire   --url URL                            (what `make deploy-*` runs)
    dtconnector backfill --project P --since 3d --url URL [--dry-run]
    dtconnector stream   --project P [--types …] [--db PATH]

Credentials as DT's service accounts come (DT_SERVICE_ACCOUNT_KEY_ID, _SECRET, _EMAIL, or
DT_CREDENTIALS_FILE); DT_API_URL and DT_TOKEN_URL override DT's endpoints. The signature secret
comes only from DT_SIGNATURE_SECRET or --secret-file, and is never printed. Every failure is
one line on stderr and exit status 2, never a traceback. Only argument parsing lives here
(``add_<name>_parser``, named in `dtconnector.cli.COMMANDS`); the work is in the sibling
modules, which import `requests` (the `dt` extra) lazily.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import textwrap
import threading
from datetime import datetime, timezone

from core.times import DURATION_SYNTAX, duration_arg, parse_when

from .client import DTError
from .options import add_header_options, csv
from .text import printable, quoted

PROJECT_HELP = "DT project id (default: $DT_PROJECT_ID)"
CREDENTIALS_NOTE = ("DT credentials: DT_SERVICE_ACCOUNT_KEY_ID, DT_SERVICE_ACCOUNT_SECRET and "
                    "DT_SERVICE_ACCOUNT_EMAIL (or DT_CREDENTIALS_FILE); DT_API_URL and DT_TOKEN_URL override "
                    "DT's endpoints (`python -m emulator.dtapi` runs a local stand-in).")
DURATIONS_NOTE = f"Time options take {DURATION_SYNTAX}."


def _parser(sub, name: str, help_text: str, description: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with one example and the notes every DT command shares."""
    return sub.add_parser(name, help=help_text, description=textwrap.fill(description, 88),
                          epilog=f"example:\n  {example}\n\n{textwrap.fill(CREDENTIALS_NOTE, 88)}\n"
                                 f"{textwrap.fill(DURATIONS_NOTE, 88)}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _events(text: str) -> list[str]:
    """`--events temperature,touch`; `all` (or `*`) means every type (DT: an empty filter)."""
    return [] if text.strip().lower() in ("all", "*") else csv(text)


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


def _change(args, api_url: str):
    """The change the command line asks for, and the connector fields it names."""
    from .connectors import CONFIG_KEY, Change, native_config, push_url_problem, read_secret

    given: set[str] = set()
    change = Change(args.name, args.type)
    if args.events is not None:
        change.events = args.events
        given.add("events")
    if args.labels is not None:
        change.labels = args.labels
        given.add("labels")
    if args.disabled or args.enabled:
        change.status = "USER_DISABLED" if args.disabled else "ACTIVE"
        given.add("status")
    if args.type == "HTTP_PUSH":
        if args.url is not None:
            problem = push_url_problem(args.url, api_url)
            if problem:
                raise DTError(problem)
            change.url = args.url
            given.add("httpConfig.url")
        if os.environ.get("DT_SIGNATURE_MODE", "").strip().lower() == "asymmetric":
            change.secret = ""  # DT signs with its own key (DT-Asymmetric-Signature); no shared secret
        else:
            change.secret = read_secret(args.secret_file)
        if change.secret is not None:
            given.add("httpConfig.signatureSecret")
        change.headers = dict(args.header)
        change.remove_headers = list(args.remove_header)
        given |= {f"httpConfig.headers.{h}" for h in list(change.headers) + change.remove_headers}
    else:
        change.native = native_config(args.type, args)
        if change.native is not None:
            given.add(CONFIG_KEY[args.type])
    return change, given


def cmd_apply(args) -> int:
    from .connectors import apply, connector_id, default_events, find

    project = _project(args)
    client = _client()
    change, given = _change(args, client.base_url)
    current = find(client, project, args.name, required=False)
    events, why = (args.events, "--events") if args.events is not None else (None, "")
    if events is None and current is None:
        events, why = default_events()  # a new connector: what the handlers subscribe to
    result = apply(client, project, change, current, dry_run=args.dry_run, default_events=events or [], given=given)
    name = printable(args.name)
    if result.created or args.events is not None:
        print(f"event filter: {', '.join(events or []) or 'all types'} ({why})")
    if not result.changes:
        print(f"connector '{name}' in project {printable(project)}: up to date, nothing to change")
    else:
        print("\n".join(result.changes))
    if result.kept:
        print(result.kept)
    if args.dry_run:
        print("(dry run: nothing changed)")
    elif result.changes:
        print(f"applied: connector '{name}' ({printable(connector_id(result.connector))}) in project "
              f"{printable(project)}")
    return 0


def cmd_list(args) -> int:
    from .connectors import connector_id, redacted, target

    project = _project(args)
    conns = _client().connectors(project)
    if args.json:
        print(json.dumps([redacted(c) for c in conns], indent=2))
        return 0
    if not conns:
        print(f"no data connectors in project {printable(project)}")
    for c in conns:
        events = ",".join(printable(e, 40) for e in c.get("events") or []) or "all"
        print(f"{printable(connector_id(c), 60)}  {quoted(c.get('displayName', ''), 80)}  "
              f"{printable(c.get('type'), 30)}  {printable(c.get('status'), 30)}  {printable(target(c), 200)}  "
              f"events={events}")
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
    print(json.dumps(redacted(conn), indent=2, sort_keys=True))  # JSON escapes every control character
    return 0


def _set_status(status: str):
    def cmd(args) -> int:
        from .connectors import connector_id

        client, project, conn = _find(args)
        name = printable(conn.get("displayName"))
        if conn.get("status") == status:
            print(f"connector '{name}' is already {status}")
            return 0
        client.call("PATCH", f"/projects/{project}/dataconnectors/{connector_id(conn)}", body={"status": status})
        print(f"connector '{name}': {printable(conn.get('status'), 40)} -> {status}")
        return 0
    return cmd


def cmd_delete(args) -> int:
    from .connectors import connector_id

    client, project, conn = _find(args)
    label = (f"{quoted(conn.get('displayName'))} ({printable(connector_id(conn))}) in project "
             f"{printable(project)}")
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
          f"{quoted(conn.get('displayName'))}")
    return 0


def cmd_metrics(args) -> int:
    from .connectors import connector_id

    client, project, conn = _find(args)
    m = client.call("GET", f"/projects/{project}/dataconnectors/{connector_id(conn)}:metrics").get("metrics")
    m = m if isinstance(m, dict) else {}
    if args.json:
        print(json.dumps(m))
    else:
        print(f"last 3 h: successCount {printable(m.get('successCount', 0), 20)}  "
              f"errorCount {printable(m.get('errorCount', 0), 20)}  latency99p {printable(m.get('latency99p', '-'), 20)}")
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
    p.add_argument("--name", help="the connector's display name (no default: give this or --id)")
    p.add_argument("--id", help="the connector's id (no default: give this or --name)")


def add_connector_parser(sub, summary: str) -> None:
    conn = _parser(sub, "connector", summary,
                   "Create, change, inspect and check DT Data Connectors through DT's REST API.",
                   "dtconnector connector apply --name prod --url https://my-receiver.example.com/ --dry-run")
    csub = conn.add_subparsers(dest="action", required=True, metavar="ACTION")

    ap = _parser(csub, "apply", "create the connector named NAME, or change only the fields given (prints the diff)",
                 "Create the connector named NAME, or change on it only the fields given here. Everything not on "
                 "the command line (status, labels, headers, events) is left as DT has it and printed as kept. "
                 "The signature secret (from DT_SIGNATURE_SECRET or --secret-file) is set whenever one is "
                 "available, never printed.",
                 "dtconnector connector apply --name prod --url https://rx.example.com/ --events temperature,touch "
                 "--header-env X-Api-Key:PROXY_KEY")
    ap.add_argument("--project", help=PROJECT_HELP)
    ap.add_argument("--name", required=True, help="display name; the connector is found by it (required)")
    ap.add_argument("--type", default="HTTP_PUSH", choices=["HTTP_PUSH", "AWS_SQS", "GOOGLE_CLOUD_PUBSUB",
                                                            "AZURE_SERVICE_BUS", "AZURE_EVENT_HUB"],
                    help="connector type (default: HTTP_PUSH)")
    ap.add_argument("--url", help="the receiver's https:// URL (HTTP_PUSH; required to create one; default: kept). "
                                  "http:// is refused, as DT refuses it, except a loopback URL while DT_API_URL "
                                  "is on loopback too (the local stand-in)")
    ap.add_argument("--events", type=_events, default=None, metavar="TYPE,…|all",
                    help="event types to deliver, or `all` (default: kept; a new connector gets the types your "
                         "DT_HANDLERS @on name, all for '*')")
    ap.add_argument("--labels", type=csv, default=None, metavar="KEY,…",
                    help="label keys to include in each body; '' for none (default: kept; new: none)")
    state = ap.add_mutually_exclusive_group()
    state.add_argument("--disabled", action="store_true", help="set USER_DISABLED (default: status kept; new: ACTIVE)")
    state.add_argument("--enabled", action="store_true", help="set ACTIVE (default: status kept)")
    add_header_options(ap, "custom header DT sends, added or changed; others are kept")
    ap.add_argument("--remove-header", action="append", default=[], metavar="NAME",
                    help="remove this custom header (repeatable; default: none removed)")
    ap.add_argument("--secret-file", help="read the signature secret from this file (default: $DT_SIGNATURE_SECRET; "
                                          "neither: the secret is kept)")
    ap.add_argument("--dry-run", action="store_true", help="only print what would change (default: apply it)")
    native = ap.add_argument_group("native queue connectors (--type other than HTTP_PUSH): the config object is "
                                   "replaced whole when one of these is given")
    native.add_argument("--sqs-queue-url", help="AWS_SQS: the queue URL (default: kept)")
    native.add_argument("--aws-role-arn", help="AWS_SQS: the role DT assumes (default: kept)")
    native.add_argument("--audience", help="AWS_SQS / GOOGLE_CLOUD_PUBSUB: the identity token audience "
                                           "(default: kept)")
    native.add_argument("--pubsub-topic", help="GOOGLE_CLOUD_PUBSUB: projects/<p>/topics/<t> (default: kept)")
    native.add_argument("--azure-url", help="AZURE_SERVICE_BUS (sb://ns/topic) / AZURE_EVENT_HUB: the URL "
                                            "(default: kept)")
    native.add_argument("--azure-tenant-id", help="AZURE_*: tenant id of the app DT authenticates as (default: kept)")
    native.add_argument("--azure-client-id", help="AZURE_*: client id of the app DT authenticates as (default: kept)")
    ap.set_defaults(func=_guarded(cmd_apply))

    ls = _parser(csub, "list", "the project's connectors", "List the project's Data Connectors (secrets masked).",
                 "dtconnector connector list --project P")
    ls.add_argument("--project", help=PROJECT_HELP)
    ls.add_argument("--json", action="store_true", help="as JSON (default: one line each)")
    ls.set_defaults(func=_guarded(cmd_list))

    for action, func, text in (
        ("show", cmd_show, "one connector as JSON (secrets masked)"),
        ("enable", _set_status("ACTIVE"), "set ACTIVE (does not backfill: see `dtconnector backfill`)"),
        ("disable", _set_status("USER_DISABLED"), "set USER_DISABLED (DT's advice for a connector not in use)"),
        ("sync", cmd_sync, "ask DT to re-send the latest event of each type for every device"),
    ):
        p = _parser(csub, action, text, text[0].upper() + text[1:] + ".", f"dtconnector connector {action} --name prod")
        _add_target(p)
        p.set_defaults(func=_guarded(func))

    de = _parser(csub, "delete", "delete a connector (asks unless --yes)", "Delete a connector (asks unless --yes).",
                 "dtconnector connector delete --name old --yes")
    _add_target(de)
    de.add_argument("--yes", action="store_true", help="do not ask (default: ask; refuse without a terminal)")
    de.set_defaults(func=_guarded(cmd_delete))

    me = _parser(csub, "metrics", "DT's delivery counts and p99 latency, last 3 h",
                 "DT's delivery counts and p99 latency for the last 3 hours.",
                 "dtconnector connector metrics --name prod --json")
    _add_target(me)
    me.add_argument("--json", action="store_true", help="as JSON (default: one line)")
    me.set_defaults(func=_guarded(cmd_metrics))

    st = _parser(csub, "status", "one health verdict: exit 0 healthy, 1 degraded/disabled, 2 error",
                 "One health verdict from the connector's status, DT's counts for the last 3 h and whether the URL "
                 "answers: exit 0 healthy, 1 degraded or disabled, 2 usage, credential or DT errors.",
                 "dtconnector connector status --name prod || alert")
    _add_target(st)
    st.add_argument("--json", action="store_true", help="as JSON (default: text)")
    st.add_argument("--max-error-rate", type=float, default=0.1,
                    help="share of failed deliveries still healthy (default: 0.1)")
    st.set_defaults(func=_guarded(cmd_status))

    wi = _parser(csub, "wire", "after a deploy: set URL and secret, sync, wait for deliveries (what deploys run)",
                 "After a deploy: set the connector's URL and signature secret (and, only while DT has none, the "
                 "event filter your handlers imply), keep custom headers, labels and a disabled status, then "
                 "ask DT to sync and wait until DT reports a delivery. Without credentials: print the manual steps.",
                 "dtconnector connector wire --url https://rx.example.com/")
    wi.add_argument("--url", required=True, help="the deployed receiver's URL (required)")
    wi.add_argument("--project", help=PROJECT_HELP)
    wi.add_argument("--name", default=os.environ.get("DT_CONNECTOR_NAME", "dtconnector"),
                    help="connector display name (default: $DT_CONNECTOR_NAME or 'dtconnector')")
    wi.add_argument("--wait", type=duration_arg, default=os.environ.get("DT_WIRE_WAIT_S") or "60", metavar="DURATION",
                    help="how long to wait for DT's deliveries (default: $DT_WIRE_WAIT_S or 60s)")
    wi.add_argument("--secret-file", help="read the signature secret from this file (default: $DT_SIGNATURE_SECRET)")
    wi.set_defaults(func=_guarded(cmd_wire))


# --- backfill ---------------------------------------------------------------------------


def cmd_backfill(args) -> int:
    from .backfill import Plan, run
    from .connectors import find, read_secret
    from .delivery import check_url

    project = _project(args)
    now = datetime.now(timezone.utc)
    try:
        since = parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else now
    except ValueError as exc:
        raise DTError(str(exc)) from None
    if since >= until:
        raise DTError("--since must be before --until")
    if (now - since).total_seconds() > HISTORY_DAYS * 86400:
        raise DTError(f"--since is more than {HISTORY_DAYS} days ago: DT keeps {HISTORY_DAYS} days of history")
    try:
        check_url(args.url)
    except ValueError as exc:
        raise DTError(str(exc)) from None
    secret = read_secret(args.secret_file)
    if not secret and not args.dry_run:
        raise DTError("no signature secret: set DT_SIGNATURE_SECRET or pass --secret-file (backfilled events are "
                      "signed with X-Dt-Signature; the receiver must accept it, i.e. mode either/secret)")
    client = _client()
    labels = args.labels
    if labels is None and args.connector:
        found = find(client, project, args.connector).get("labels")
        labels = [str(x) for x in found] if isinstance(found, list) else []
    plan = Plan(project, since, until, args.url, secret, devices=args.devices or [], types=args.types or [],
                label_keys=labels or [], checkpoint=args.checkpoint or f".dtconnector/backfill-{project}.json",
                dry_run=args.dry_run, concurrency=args.concurrency, rate=args.rate, timeout_s=args.timeout,
                max_age_s=args.max_age, window_text=f"{args.since}..{args.until or ''}")
    summary = run(client, plan)
    print(json.dumps(summary.to_dict()) if args.json else summary.text(), flush=True)
    if summary.interrupted:
        return 130
    return 0 if summary.complete else 1


HISTORY_DAYS = 31  # DT keeps 31 days of event history


def add_backfill_parser(sub, summary: str) -> None:
    p = _parser(sub, "backfill", summary,
                "Fetch each device's event history for a window and deliver it to the receiver signed like DT, "
                "oldest first. A 4xx (a wrong secret or URL) stops the run at once, as does an event still "
                "failing (5xx, timeout, no connection) --max-age after its first try; the summary counts every "
                "event by answer. Resumable: the same command continues where an interrupted run stopped. "
                "Exit 0 all acknowledged, 1 not all, 2 errors, 130 Ctrl-C.",
                "dtconnector backfill --since 2026-11-20T08:00:00Z --url https://rx.example.com/ --connector prod")
    p.add_argument("--project", help=PROJECT_HELP)
    p.add_argument("--since", required=True, help="start: RFC 3339, or an age like 3d or 12h (required; at most 31d)")
    p.add_argument("--until", default=None, help="end: RFC 3339 or an age (default: now)")
    p.add_argument("--url", required=True, help="the receiver's URL (required)")
    p.add_argument("--devices", type=csv, default=None, metavar="ID,…", help="device ids (default: every device)")
    p.add_argument("--types", type=csv, default=None, metavar="TYPE,…", help="event types (default: all)")
    p.add_argument("--labels", type=csv, default=None, metavar="KEY,…",
                   help="label keys to include in each body (default: those of --connector, else none)")
    p.add_argument("--connector", help="take the label keys from this connector (display name; default: none)")
    p.add_argument("--secret-file", help="signature secret file (default: $DT_SIGNATURE_SECRET)")
    p.add_argument("--checkpoint", help="progress file (default: .dtconnector/backfill-<project>.json)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as answered)")
    p.add_argument("--timeout", type=duration_arg, default=10.0, metavar="DURATION",
                   help="answer deadline per request (default: 10s, DT's)")
    p.add_argument("--max-age", type=duration_arg, default=600.0, metavar="DURATION",
                   help="retry a failing event this long after its first try, then stop the run (default: 10m)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent; send nothing (default: send)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (default: text)")
    p.set_defaults(func=_guarded(cmd_backfill))


# --- stream -----------------------------------------------------------------------------


def cmd_stream(args) -> int:
    from core.config import ConfigError
    from core.ports import StoreError
    from local_receiver.app import AlreadyRunning

    from .stream import Follower, local_pipeline

    project = _project(args)
    client = _client()
    try:
        app, accept = local_pipeline(args.db)
    except AlreadyRunning as exc:
        raise DTError(f"{exc} (stop `dtconnector serve` first: they share the database)") from None
    except (ConfigError, StoreError) as exc:  # a DT_* setting, a handler module, the database file
        raise DTError(str(exc)) from None
    stop = threading.Event()
    follower = Follower(client, project, accept, types=args.types, label_keys=args.labels,
                        ping_interval_s=args.ping_interval)
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    print(f"stream: feeding {args.db} (see `dtconnector state --db {shlex.quote(args.db)}`); Ctrl-C stops",
          file=sys.stderr)
    code = 0
    try:
        follower.run(stop)
    except KeyboardInterrupt:
        code = 130
    except DTError as exc:
        print(f"dtconnector stream: {exc}", file=sys.stderr)
        code = exc.exit_code
    finally:
        stop.set()
        app.stop()
        s = follower.stats
        print(f"stream: {s.streamed} streamed, {s.backfilled} backfilled after {s.reconnects} reconnects; "
              f"accepted {s.accepted}, duplicates {s.duplicates}, refused {s.rejected}, malformed {s.malformed}"
              + (f", NOT stored {s.unstored} (the store was failing when stopped)" if s.unstored else ""),
              file=sys.stderr)
    return code


def add_stream_parser(sub, summary: str) -> None:
    from local_receiver.app import DEFAULT_DB

    p = _parser(sub, "stream", summary,
                "Follow DT's event stream and feed every event into the local receiver's own pipeline (dedup, "
                "handlers, state, dead letters, as `dtconnector serve`; stop serve first: they share the "
                "database). After every reconnect the gap is fetched from DT's history, and again 12 s later.",
                "dtconnector stream --types temperature,touch --duration 10m")
    p.add_argument("--project", help=PROJECT_HELP)
    p.add_argument("--types", type=csv, default=None, metavar="TYPE,…", help="event types (default: all)")
    p.add_argument("--labels", type=csv, default=None, metavar="KEY,…",
                   help="label keys to include in each body (default: none)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"the local receiver's database (default: {DEFAULT_DB})")
    p.add_argument("--ping-interval", type=duration_arg, default=10.0, metavar="DURATION",
                   help="DT's keep-alive interval; silence for twice this reconnects (default: 10s)")
    p.add_argument("--duration", type=duration_arg, default=None, metavar="DURATION",
                   help="stop after this long and print the summary (default: until Ctrl-C)")
    p.set_defaults(func=_guarded(cmd_stream))
