"""A change to a Data Connector, the connector DT has, and what the change does to it.

Why a change, not a whole desired connector: `connector apply` and deploy wiring run again and
again while a user also edits the connector in DT Studio (disables it, adds a header a proxy
checks, picks label keys their handlers read). Each run changes only the fields it was given
(the command line's options; wiring's URL, secret and, when DT has none, event filter) and
leaves the rest as DT has it, saying so. Nothing changes when nothing differs (no write at
all), and the diff is printed. A connector is found by its display name (`--name`), which is
what a user sees in DT Studio.

Secrets (the signature secret, custom header values, which often hold API keys) are never
shown: the diff says `(set)`, `(changed)` or `(removed)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .client import Client, DTError
from .text import printable, quoted

TYPES = ("HTTP_PUSH", "AWS_SQS", "GOOGLE_CLOUD_PUBSUB", "AZURE_SERVICE_BUS", "AZURE_EVENT_HUB")
CONFIG_KEY = {
    "HTTP_PUSH": "httpConfig",
    "AWS_SQS": "awsSqsConfig",
    "GOOGLE_CLOUD_PUBSUB": "pubsubConfig",
    "AZURE_SERVICE_BUS": "azureServiceBusConfig",
    "AZURE_EVENT_HUB": "azureEventHubConfig",
}
SECRET_PATHS = ("httpConfig.signatureSecret",)
MASKED_PREFIXES = ("httpConfig.headers.",)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_events(env=os.environ) -> tuple[list[str], str]:
    """The event filter the registered handlers imply: the types their `@on` name, or []
    (all) when one is `@on("*")` or none are registered. Returns (events, why)."""
    from core.config import ConfigError
    from core.handlers import ANY, registry

    modules = [m.strip() for m in env.get("DT_HANDLERS", "").split(",") if m.strip()]
    try:
        registry.load(modules)
    except ConfigError as exc:  # the user's module, missing or broken: one line
        raise DTError(str(exc)) from None
    types = sorted({t for types in registry.summary().values() for t in types})
    if not types:
        return [], "no handlers registered (DT_HANDLERS): all event types"
    if ANY in types:
        return [], 'a handler is @on("*"): all event types'
    return types, "the event types your handlers name"


def read_secret(secret_file: str | None, env=os.environ) -> str | None:
    """The connector's signature secret: `--secret-file`, else `DT_SIGNATURE_SECRET`."""
    if secret_file:
        try:
            value = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise DTError(f"cannot read --secret-file {secret_file}: {exc.strerror}") from None
        if not value:
            raise DTError(f"--secret-file {secret_file} is empty")
        return value
    return env.get("DT_SIGNATURE_SECRET") or None


def push_url_problem(url: str, api_url: str) -> str | None:
    """Why DT would refuse `url` as an HTTP push target, or None. DT delivers only over https;
    an http://127.0.0.1 (or localhost) URL passes only when the DT API itself is on loopback:
    the local stand-in, which delivers to loopback receivers in tests and demos."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in LOOPBACK and urlsplit(api_url).hostname in LOOPBACK:
        return None
    if parts.scheme == "http" and parts.hostname:
        return (f"DT delivers only to https:// URLs: refusing --url {printable(url)} "
                "(put the receiver behind a TLS-terminating proxy)")
    return f"--url must be an https:// URL, got {quoted(url)}"


@dataclass
class Change:
    """What to set on a connector; None (or empty) keeps what DT has."""

    name: str
    type: str = "HTTP_PUSH"
    status: str | None = None  # ACTIVE / USER_DISABLED
    events: list[str] | None = None  # [] = all types
    labels: list[str] | None = None
    url: str | None = None  # HTTP_PUSH
    secret: str | None = None  # HTTP_PUSH; "" = none (DT-Asymmetric-Signature only)
    headers: dict = field(default_factory=dict)  # HTTP_PUSH: set these (added or changed)
    remove_headers: list[str] = field(default_factory=list)
    native: dict | None = None  # a queue connector's config object, whole

    def new(self, default_events: list[str]) -> dict:
        """The connector to create (what is not given takes its default)."""
        if self.type == "HTTP_PUSH":
            if not self.url:
                raise DTError("--url is required to create an HTTP_PUSH connector")
            if self.secret is None:
                raise DTError("no signature secret: set DT_SIGNATURE_SECRET or pass --secret-file "
                              "(or DT_SIGNATURE_MODE=asymmetric to rely on DT-Asymmetric-Signature)")
            config = {"url": self.url, "signatureSecret": self.secret, "headers": dict(self.headers)}
        else:
            if self.native is None:
                raise DTError(f"--type {self.type} needs its queue options (see --help)")
            config = dict(self.native)
        return {"displayName": self.name, "type": self.type, "status": self.status or "ACTIVE",
                "events": sorted(set(default_events if self.events is None else self.events)),
                "labels": sorted(set(self.labels or [])), CONFIG_KEY[self.type]: config}

    def applied_to(self, current: dict) -> dict:
        """`current` with this change made (the fields this change manages only)."""
        if current.get("type") != self.type:
            raise DTError(f"connector {quoted(self.name)} is {printable(current.get('type'))}, not {self.type}: "
                          "delete it first or choose another --name")
        key = CONFIG_KEY[self.type]
        doc = {"displayName": self.name, "type": self.type, "status": current.get("status"),
               "events": sorted(set(current.get("events") or [])), "labels": sorted(set(current.get("labels") or [])),
               key: dict(current.get(key) or {})}
        if self.status is not None:
            doc["status"] = self.status
        if self.events is not None:
            doc["events"] = sorted(set(self.events))
        if self.labels is not None:
            doc["labels"] = sorted(set(self.labels))
        config = doc[key]
        if self.type == "HTTP_PUSH":
            if self.url is not None:
                config["url"] = self.url
            if self.secret is not None:
                config["signatureSecret"] = self.secret
            headers = dict(config.get("headers") or {})
            headers.update(self.headers)
            for name in self.remove_headers:
                headers.pop(name, None)
            config["headers"] = headers
        elif self.native is not None:
            doc[key] = dict(self.native)
        return doc


def native_config(kind: str, args) -> dict | None:
    """The config object of a native (queue) connector from the CLI flags, as DT's REST API
    reference describes each type's (`CONFIG_KEY`); None when no flag of it is given (keep DT's)."""
    def need(*names: str) -> None:
        missing = [n for n in names if not getattr(args, n.replace("-", "_"), None)]
        if missing:
            raise DTError(f"--type {kind} needs " + ", ".join("--" + n for n in missing))

    flags = ("sqs_queue_url", "aws_role_arn", "audience", "pubsub_topic", "azure_url", "azure_tenant_id",
             "azure_client_id")
    if not any(getattr(args, f, None) for f in flags):
        return None
    if kind == "AWS_SQS":
        need("sqs-queue-url", "aws-role-arn")
        cfg = {"queueUrl": args.sqs_queue_url, "awsRoleArn": args.aws_role_arn}
        if args.audience:
            cfg["audience"] = args.audience
        return cfg
    if kind == "GOOGLE_CLOUD_PUBSUB":
        need("pubsub-topic")
        cfg = {"topic": args.pubsub_topic}
        if args.audience:
            cfg["audience"] = args.audience
        return cfg
    need("azure-url", "azure-tenant-id", "azure-client-id")
    return {"url": args.azure_url,
            "authenticationConfig": {"tenantId": args.azure_tenant_id, "clientId": args.azure_client_id}}


def flatten(doc: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (sorted where order means nothing)."""
    out: dict = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        elif isinstance(value, dict):
            out[path] = {}
        else:
            out[path] = sorted(value, key=str) if isinstance(value, list) else value
    return out


def _masked(path: str) -> bool:
    return path in SECRET_PATHS or path.startswith(MASKED_PREFIXES)


def _show(path: str, value) -> str:
    if _masked(path):
        return "(set)" if value else "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(printable(v, 80) for v in value) + "]" if value else "[] (all)" \
            if path == "events" else "[]"
    if value == {}:
        return "(none)"
    return printable(value, 200)


def diff(current: dict | None, new: dict) -> tuple[list[str], list[str]]:
    """(lines describing the change, fields left as they are). No change lines: DT already
    has what we want."""
    want = flatten({k: v for k, v in new.items() if k not in ("displayName", "type")})
    if current is None:
        return [f"+ create {new['type']} connector {quoted(new['displayName'])}"] + [
            f"    {k}: {_show(k, v)}" for k, v in want.items()], []
    have = flatten({k: current.get(k) for k in new if k not in ("displayName", "type")})
    changed, kept = [], []
    for k in sorted(set(want) | set(have)):
        old, value = have.get(k), want.get(k)
        if k == "httpConfig.signatureSecret":
            old, value = old or "", value or ""
        if isinstance(old, dict) and not old and value is None or isinstance(value, dict) and not value \
                and old is None:
            continue  # an empty object where the other side has none
        if old == value or (old is None and value == []) or (value is None and old == []):
            kept.append(k)
        elif _masked(k):
            verb = "(set)" if not old else "(removed)" if not value else "(changed)"
            changed.append(f"~ {k}: {verb}")
        elif k not in want:
            changed.append(f"- {k}: {_show(k, old)}")
        else:
            changed.append(f"~ {k}: {_show(k, old) if old is not None else '(none)'} -> {_show(k, value)}")
    return changed, kept


def kept_line(current: dict, kept: list[str], given: set[str]) -> str:
    """`kept (not on the command line): status USER_DISABLED, labels [room], httpConfig.headers.X-Key (set)`."""
    flat = flatten(current)
    shown = [f"{k} {_show(k, flat.get(k))}" for k in kept if not any(k == g or k.startswith(g + ".") for g in given)]
    return "kept as DT has them: " + ", ".join(shown) if shown else ""


def connector_id(conn: dict) -> str:
    return str(conn["name"]).rsplit("/", 1)[-1]


def find(client: Client, project: str, name: str | None = None, ident: str | None = None,
         required: bool = True) -> dict | None:
    """The connector with display name `name` (or id `ident`)."""
    if ident:
        conn = client.call("GET", f"/projects/{project}/dataconnectors/{ident}")
        if not isinstance(conn.get("name"), str):
            raise DTError(f"DT's answer for connector {printable(ident)} has no name: not a connector")
        return conn
    matches = [c for c in client.connectors(project) if c.get("displayName") == name
               and isinstance(c.get("name"), str)]
    if len(matches) > 1:
        ids = ", ".join(printable(connector_id(c), 60) for c in matches)
        raise DTError(f"{len(matches)} connectors are named {quoted(name)} in project {printable(project)} "
                      f"({ids}): use --id")
    if not matches:
        if required:
            raise DTError(f"no connector named {quoted(name)} in project {printable(project)} "
                          "(see `dtconnector connector list`)")
        return None
    return matches[0]


@dataclass
class Applied:
    connector: dict | None  # as DT answered (None on a dry run of a creation)
    created: bool
    changes: list[str]  # diff lines; [] = nothing to change
    kept: str  # the fields left as DT has them, one line ("" if none or a creation)


def apply(client: Client, project: str, change: Change, current: dict | None, dry_run: bool = False,
          default_events: list[str] | None = None, given: set[str] = frozenset()) -> Applied:
    """Create the connector (`current` None, as `find` returned it), or change on it only what
    `change` sets. `given`: the fields the user named (left out of the "kept" line even when
    they already had that value)."""
    if current is None:
        new = change.new(default_events or [])
        lines, _ = diff(None, new)
        if dry_run:
            return Applied(None, True, lines, "")
        return Applied(client.call("POST", f"/projects/{project}/dataconnectors", body=new), True, lines, "")
    new = change.applied_to(current)
    lines, kept = diff(current, new)
    kept_text = kept_line(current, kept, given)
    if dry_run or not lines:
        return Applied(current, False, lines, kept_text)
    # Only the top-level fields that differ (a config object is sent whole); never `type`.
    body = {k: v for k, v in new.items() if k != "type" and flatten({k: v}) != flatten({k: current.get(k)})}
    conn = client.call("PATCH", f"/projects/{project}/dataconnectors/{connector_id(current)}", body=body)
    return Applied(conn, False, lines, kept_text)


def redacted(conn: dict) -> dict:
    """The connector as JSON fit to print: secret and header values masked."""
    out = {k: v for k, v in conn.items()}
    http = dict(out.get("httpConfig") or {}) if isinstance(out.get("httpConfig"), dict) else {}
    if http:
        if http.get("signatureSecret"):
            http["signatureSecret"] = "(set)"
        if isinstance(http.get("headers"), dict) and http["headers"]:
            http["headers"] = {k: "(set)" for k in http["headers"]}
        out["httpConfig"] = http
    return out


def target(conn: dict) -> str:
    """Where the connector delivers: its URL, queue or topic."""
    cfg = conn.get(CONFIG_KEY.get(conn.get("type", ""), ""), {}) or {}
    if not isinstance(cfg, dict):
        return ""
    return str(cfg.get("url") or cfg.get("queueUrl") or cfg.get("topic") or "")
