"""`dtconnector send`: deliver DT-like events to a receiver the way DT Cloud does.

    dtconnector send --url http://127.0.0.1:8080/ --secret S --devices 5 --count 200 \\
        --duplicates 0.2 --shuffle --concurrency 16
    dtconnector send --url URL --secret S --from bodies.jsonl --json
    dtconnector send --to sqs://<queue URL or name> --count 20      (direct delivery)
    dtconnector send --to pubsub://projects/P/topics/T --shape base64

Exit status: 0 when every delivery was acknowledged, 1 when some were given up, 2 on
bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .generate import EVENT_TYPES, EventGenerator, read_jsonl
from .sender import DT_MAX_AGE_S, DT_TIMEOUT_S, SendConfig, Sender

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``500ms``, ``5m`` or ``12h``."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 5m, 12h)")
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * factor


def share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1 (e.g. 0.2)")
    return value


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--header wants NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_send_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "send",
        help="deliver DT-like signed events to a URL, like DT Cloud does (the emulator)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--url", help="the receiver's URL (or --to)")
    p.add_argument("--to", metavar="sqs://…|pubsub://…",
                   help="publish straight into a queue as a native DT connector would (direct delivery): "
                        "sqs://<queue URL or name>, pubsub://projects/<p>/topics/<t>; honours "
                        "AWS_ENDPOINT_URL and PUBSUB_EMULATOR_HOST")
    p.add_argument("--shape", choices=("json", "base64", "event"), default="json",
                   help="with --to: the message shape (DT's is unpublished): the push body, base64 of it, "
                        "or the bare event object (default json)")
    p.add_argument("--secret", default=None,
                   help="signature secret (default: $DT_SIGNATURE_SECRET; none: send unsigned)")
    asym = p.add_argument_group("DT-Asymmetric-Signature (ES256), as DT's newer scheme signs")
    asym.add_argument("--asymmetric-key", metavar="PEM",
                      help="also sign with this EC P-256 private key (`python -m emulator.jwks --generate key.pem`)")
    asym.add_argument("--kid", default=None,
                      help="key id in the token header (default: the key's RFC 7638 thumbprint, as emulator.jwks publishes)")
    asym.add_argument("--issuer", default=None,
                      help="iss claim (default: DT's issuer; use the URL `python -m emulator.jwks --key` prints)")
    asym.add_argument("--org", default=None, help="sub claim: the organization id (checked against DT_ORGANIZATION_ID)")
    what = p.add_argument_group("what to send")
    what.add_argument("--devices", type=positive_int, default=10, help="virtual devices (default 10)")
    what.add_argument("--count", type=int, default=100, help="events to generate (default 100)")
    what.add_argument("--types", default="",
                      help=f"comma-separated event types (default: all {len(EVENT_TYPES)})")
    what.add_argument("--from", dest="from_file", metavar="FILE",
                      help="replay the bodies in a JSONL file (one per line) instead of generating")
    what.add_argument("--seed", type=int, default=None, help="make generated events reproducible")
    how = p.add_argument_group("how to deliver")
    how.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight (default 16)")
    how.add_argument("--rate", type=float, default=None, help="new events per second (default: as fast as possible)")
    how.add_argument("--timeout", type=duration, default=DT_TIMEOUT_S, help="answer deadline (default 10s)")
    how.add_argument("--max-age", type=duration, default=DT_MAX_AGE_S,
                     help="give an event up once it is this old (default 12h)")
    how.add_argument("--retry-base", type=duration, default=1.0, help="first retry delay (default 1s)")
    how.add_argument("--retry-max", type=duration, default=300.0, help="longest retry delay (default 5m)")
    how.add_argument("--duplicates", type=share, default=0.0, help="share of events delivered twice (e.g. 0.2)")
    how.add_argument("--shuffle", action="store_true", help="deliver in random order")
    how.add_argument("--header", type=header, action="append", default=[], metavar="NAME:VALUE",
                     help="extra header on every request (repeatable)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_send)
    return p


def cmd_send(args: argparse.Namespace) -> int:
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
        progress=False if args.no_progress else None,  # None: only when stderr is a terminal
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
    return 1 if summary.given_up else 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtconnector")
    sub = parser.add_subparsers(dest="command", required=True)
    add_send_parser(sub)
    args = parser.parse_args(["send", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
