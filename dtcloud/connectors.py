"""The Data Connector a user wants, compared with the one DT has, and the change between them.

Why declarative: `apply` is run by deploy scripts again and again; it must change nothing
when nothing changed (idempotent) and show what it changes. A connector is found by its
display name (`--name`), which is what a user sees in DT Studio.

Secrets (the signature secret, custom header values, which often hold API keys) are never
shown: the diff says `(set)`, `(changed)` or `(removed)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client, DTError

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


def default_events(env=os.environ) -> tuple[list[str], str]:
    """The event filter the registered handlers imply: the types their `@on` name, or []
    (all) when one is `@on("*")` or none are registered. Returns (events, why)."""
    from core.handlers import ANY, registry

    modules = [m.strip() for m in env.get("DT_HANDLERS", "").split(",") if m.strip()]
    try:
        registry.load(modules)
    except Exception as exc:  # the user's module: report, don't crash
        raise DTError(f"cannot import DT_HANDLERS module: {type(exc).__name__}: {exc}") from None
    types = sorted({r.event_type for r in registry._registrations})
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


@dataclass
class Desired:
    name: str
    type: str = "HTTP_PUSH"
    status: str = "ACTIVE"
    events: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def body(self) -> dict:
        return {
            "displayName": self.name,
            "type": self.type,
            "status": self.status,
            "events": list(self.events),
            "labels": list(self.labels),
            CONFIG_KEY[self.type]: self.config,
        }


def native_config(kind: str, args) -> dict:
    """The config object of a native (queue) connector from the CLI flags, per §8."""
    def need(*names: str) -> None:
        missing = [n for n in names if not getattr(args, n.replace("-", "_"), None)]
        if missing:
            raise DTError(f"--type {kind} needs " + ", ".join("--" + n for n in missing))

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
            out[path] = sorted(value) if isinstance(value, list) else value
    return out


def _show(path: str, value) -> str:
    if path in SECRET_PATHS or path.startswith(MASKED_PREFIXES):
        return "(set)" if value else "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]" if value else "[] (all)" if path == "events" else "[]"
    return str(value)


def diff(current: dict | None, desired: Desired) -> list[str]:
    """Human lines describing the change; [] when DT already has what we want."""
    want = flatten(desired.body())
    if current is None:
        return [f"+ create {desired.type} connector {desired.name!r}"] + [
            f"    {k}: {_show(k, v)}" for k, v in want.items() if k not in ("displayName", "type")
        ]
    have = flatten({k: current.get(k) for k in desired.body()})
    # keys of a config object DT has and we do not set: a header to remove, say
    for k in flatten(current).keys():
        if k.startswith(CONFIG_KEY[desired.type] + ".") and k not in have:
            have[k] = flatten(current)[k]
    lines = []
    if current.get("type") != desired.type:
        raise DTError(f"connector {desired.name!r} is {current.get('type')}, not {desired.type}: "
                      "delete it first or choose another --name")
    for k in sorted(set(want) | set(have)):
        old, new = have.get(k), want.get(k)
        if k == "httpConfig.signatureSecret":
            old, new = old or "", new or ""
        if k == "httpConfig.headers" and not old and not new:
            continue
        if old == new:
            continue
        masked = k in SECRET_PATHS or k.startswith(MASKED_PREFIXES)
        if masked:
            verb = "(set)" if not old else "(removed)" if not new else "(changed)"
            lines.append(f"~ {k}: {verb}")
        elif k not in want:
            lines.append(f"- {k}: {_show(k, old)}")
        else:
            lines.append(f"~ {k}: {_show(k, old) if old is not None else '(none)'} -> {_show(k, new)}")
    return lines


def connector_id(conn: dict) -> str:
    return conn["name"].rsplit("/", 1)[-1]


def find(client: Client, project: str, name: str | None = None, ident: str | None = None,
         required: bool = True) -> dict | None:
    """The connector with display name `name` (or id `ident`)."""
    if ident:
        return client.call("GET", f"/projects/{project}/dataconnectors/{ident}")
    matches = [c for c in client.connectors(project) if c.get("displayName") == name]
    if len(matches) > 1:
        ids = ", ".join(connector_id(c) for c in matches)
        raise DTError(f"{len(matches)} connectors are named {name!r} in project {project} ({ids}): use --id")
    if not matches:
        if required:
            raise DTError(f"no connector named {name!r} in project {project} (see `dtconnector connector list`)")
        return None
    return matches[0]


def apply(client: Client, project: str, desired: Desired, dry_run: bool = False) -> tuple[dict | None, list[str]]:
    """Create or update the connector so DT has `desired`. Returns (connector, diff lines)."""
    current = find(client, project, desired.name, required=False)
    lines = diff(current, desired)
    if dry_run or not lines:
        return current, lines
    if current is None:
        return client.call("POST", f"/projects/{project}/dataconnectors", body=desired.body()), lines
    # Only the fields that differ, as DT's client does (a config object is sent whole); never `type`.
    body = {k: v for k, v in desired.body().items() if k != "type" and flatten({k: v}) != flatten({k: current.get(k)})}
    if CONFIG_KEY[desired.type] not in body and any("Config." in line for line in lines):
        body[CONFIG_KEY[desired.type]] = desired.config  # e.g. a header DT has and we removed
    return client.call("PATCH", f"/projects/{project}/dataconnectors/{connector_id(current)}", body=body), lines


def redacted(conn: dict) -> dict:
    """The connector as JSON fit to print: secret and header values masked."""
    out = {k: v for k, v in conn.items()}
    http = dict(out.get("httpConfig") or {})
    if http:
        if http.get("signatureSecret"):
            http["signatureSecret"] = "(set)"
        if http.get("headers"):
            http["headers"] = {k: "(set)" for k in http["headers"]}
        out["httpConfig"] = http
    return out


def target(conn: dict) -> str:
    """Where the connector delivers: its URL, queue or topic."""
    cfg = conn.get(CONFIG_KEY.get(conn.get("type", ""), ""), {}) or {}
    return cfg.get("url") or cfg.get("queueUrl") or cfg.get("topic") or ""
