"""`dtconnector send`: deliver DT-like events to a receiver the way DT Cloud does.

    dtconnector send --url http://127.0.0.1:8080/ --secret S --devices 5 --count 200 \\
        --duplicates 0.2 --shuffle --concurrency 16
    dtconnector send --url URL --secret S --from bodies.jsonl --json
    dtconnector send --to sqs://<queue URL or name> --count 20      (direct delivery)
    dtconnector send --to pubsub://projects/P/topics/T --shape base64

A 4xx answer stops the run at once and is printed with its status and the receiver's reason
(`--patient` retries it instead, as DT does for 12 hours). Exit status: 0 when every delivery
was acknowledged, 1 when some were not (refused, given up, not tried), 2 on bad arguments,
130 on Ctrl-C (after the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.times import DURATION_SYNTAX, duration_arg
from dtcloud.options import add_header_options

from .generate import EVENT_TYPES, EventGenerator, read_jsonl
from .sender import DT_MAX_AGE_S, DT_TIMEOUT_S, SendConfig, Sender

EXAMPLE = """example:
  dtconnector send --url http://127.0.0.1:8080/ --secret "$(cat .dtconnector/dev-secret)" --count 20

Every time option takes """ + DURATION_SYNTAX + "."


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (a share between 0 and 1, e.g. 0.2)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1 (e.g. 0.2)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_send_parser(subparsers, summary: str) -> argparse.ArgumentParser:
    """`dtconnector send` (named in `dtconnector.cli.COMMANDS`)."""
    p = subparsers.add_parser(
        "send",
        help=summary,
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="the receiver's URL, for HTTP push (no default: give this or --to)")
    p.add_argument("--to", metavar="sqs://…|pubsub://…",
                   help="publish straight into a queue as a native DT connector would (direct delivery): "
                        "sqs://<queue URL or name>, pubsub://projects/<p>/topics/<t>; honours "
                        "AWS_ENDPOINT_URL and PUBSUB_EMULATOR_HOST (no default: give this or --url)")
    p.add_argument("--shape", choices=("json", "base64", "event"), default="json",
                   help="with --to: the message shape (DT's is unpublished): the push body, base64 of it, "
                        "or the bare event object (default: json)")
    p.add_argument("--secret", default=None,
                   help="signature secret (default: $DT_SIGNATURE_SECRET; neither: send unsigned)")
    asym = p.add_argument_group("DT-Asymmetric-Signature (ES256), as DT's newer scheme signs")
    asym.add_argument("--asymmetric-key", metavar="PEM",
                      help="also sign with this EC P-256 private key (`python -m emulator.jwks --generate key.pem`; "
                           "default: none)")
    asym.add_argument("--kid", default=None,
                      help="key id in the token header (default: the key's RFC 7638 thumbprint, as emulator.jwks "
                           "publishes)")
    asym.add_argument("--issuer", default=None,
                      help="iss claim (default: DT's issuer; use the URL `python -m emulator.jwks --key` prints)")
    asym.add_argument("--org", default=None,
                      help="sub claim: the organization id, checked against DT_ORGANIZATION_ID (default: none)")
    what = p.add_argument_group("what to send")
    what.add_argument("--devices", type=positive_int, default=10, help="virtual devices (default: 10)")
    what.add_argument("--count", type=int, default=100, help="events to generate (default: 100)")
    what.add_argument("--types", default="",
                      help=f"comma-separated event types (default: all {len(EVENT_TYPES)})")
    what.add_argument("--from", dest="from_file", metavar="FILE",
                      help="replay the bodies in a JSONL file (one per line) instead of generating (default: none)")
    what.add_argument("--seed", type=int, default=None, help="make generated events reproducible (default: random)")
    how = p.add_argument_group("how to deliver")
    how.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight (default: 16)")
    how.add_argument("--rate", type=float, default=None,
                     help="new events per second (default: as fast as the receiver answers)")
    how.add_argument("--timeout", type=duration_arg, default=DT_TIMEOUT_S, metavar="DURATION",
                     help="answer deadline, as DT's (default: 10s)")
    how.add_argument("--patient", action="store_true",
                     help="retry a 4xx too, as DT does, until --max-age (default: the first 4xx stops the run)")
    how.add_argument("--max-age", type=duration_arg, default=DT_MAX_AGE_S, metavar="DURATION",
                     help="give an event up once it is this old, as DT does (default: 12h)")
    how.add_argument("--retry-base", type=duration_arg, default=1.0, metavar="DURATION",
                     help="first retry delay, doubled per attempt (default: 1s)")
    how.add_argument("--retry-max", type=duration_arg, default=300.0, metavar="DURATION",
                     help="longest retry delay (default: 5m)")
    how.add_argument("--duplicates", type=share, default=0.0,
                     help="share of events delivered twice, e.g. 0.2 (default: 0)")
    how.add_argument("--shuffle", action="store_true", help="deliver in random order (default: in order)")
    add_header_options(how, "extra header on every request")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the summary as JSON (default: text)")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bar (default: a bar when stderr is a terminal)")
    p.set_defaults(func=cmd_send)
    return p


def _say(text: str) -> None:
    """One line on stderr, at once, over a progress bar if one is drawn."""
    prefix = "\r\033[K" if sys.stderr.isatty() else ""
    sys.stderr.write(f"{prefix}dtconnector send: {text}\n")
    sys.stderr.flush()


def cmd_send(args: argparse.Namespace) -> int:
    try:
        return _cmd_send(args)
    except KeyboardInterrupt:  # before or after the delivery itself (it reports its own)
        print("dtconnector send: interrupted", file=sys.stderr)
        return 130


def _cmd_send(args: argparse.Namespace) -> int:
    if (args.url is None) == (args.to is None):
        print("dtconnector send: give exactly one of --url (HTTP push) or --to (a queue)", file=sys.stderr)
        return 2
    secret = args.secret if args.secret is not None else os.environ.get("DT_SIGNATURE_SECRET") or None
    if args.from_file:
        try:
            bodies = read_jsonl(args.from_file)
        except OSError as exc:
            print(f"dtconnector send: cannot read {args.from_file}: {exc.strerror}", file=sys.stderr)
            return 2
    else:
        if args.count < 0:
            print("dtconnector send: --count must not be negative", file=sys.stderr)
            return 2
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown:
            print(f"dtconnector send: note: sending event types DT does not document: {', '.join(unknown)}",
                  file=sys.stderr)
        generator = EventGenerator(args.devices, types or None, seed=args.seed)
        bodies = [e.body for e in generator.events(args.count)]
    if args.to is not None:
        return _send_direct(args, bodies)
    asymmetric = {}
    if args.asymmetric_key:
        from .jwks import key_id, load_private_key
        from .signing import DT_ISSUER

        try:
            pem = Path(args.asymmetric_key).read_bytes()
            key = load_private_key(pem)
        except (OSError, ValueError) as exc:
            print(f"dtconnector send: cannot use --asymmetric-key {args.asymmetric_key}: {exc}", file=sys.stderr)
            return 2
        asymmetric = dict(asymmetric_key=key, kid=args.kid or key_id(pem), issuer=args.issuer or DT_ISSUER, org=args.org)
    if not secret and not asymmetric:
        print("dtconnector send: no --secret, DT_SIGNATURE_SECRET or --asymmetric-key: sending UNSIGNED requests",
              file=sys.stderr)
    config = SendConfig(
        url=args.url,
        secret=secret,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        max_age_s=args.max_age,
        retry_base_s=args.retry_base,
        retry_max_s=max(args.retry_max, args.retry_base),
        duplicates=args.duplicates,
        shuffle=args.shuffle,
        rate=args.rate if args.rate and args.rate > 0 else None,
        headers=args.header,
        seed=args.seed,
        progress=False if args.no_progress or args.json else None,  # None: only when stderr is a terminal
        patient=args.patient,
        report=_say,
        **asymmetric,
    )
    try:
        sender = Sender(config)
    except ValueError as exc:
        print(f"dtconnector send: {exc}", file=sys.stderr)
        return 2
    summary = sender.run(bodies)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.text())
    if summary.interrupted:
        return 130
    return 1 if summary.unacknowledged else 0


def _send_direct(args: argparse.Namespace, bodies: list[bytes]) -> int:
    from .direct import TargetError, messages, parse_target, publish

    try:
        target = parse_target(args.to)
    except TargetError as exc:
        print(f"dtconnector send: {exc}", file=sys.stderr)
        return 2
    batch = messages(bodies, args.shape, args.duplicates, args.shuffle, args.seed)
    try:
        sent = publish(target, batch)
    except Exception as exc:  # the SDK's own error: say which, never a traceback
        print(f"dtconnector send: publishing to {args.to} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = {"target": args.to, "shape": args.shape, "events": len(bodies), "published": sent}
    print(json.dumps(summary, indent=2) if args.json else
          f"published {sent} message(s) for {len(bodies)} event(s) to {args.to} (shape {args.shape})")
    return 0
