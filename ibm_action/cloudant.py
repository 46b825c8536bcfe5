"""Cloudant through the official `ibmcloudant` SDK: configuration, the client, and `Docs`,
one database seen as documents with optimistic concurrency on `_rev`.

Every SDK failure leaves this module as `core.ports.StoreError` (chained): an HTTP error
answer (`ApiException`, e.g. 503 or 429) or no answer at all (the `requests` connection
and timeout errors the SDK lets through). 404 and 409 are not failures here: they are
"absent" and "someone else wrote first", which the callers' loops handle.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from core.config import ConfigError, Secret
from core.ports import StoreError
from core.proxies import endpoint_environment

DEFAULT_DB = "dt_events"
DEFAULT_STATE_DB = "dt_device_state"
DEFAULT_TIMEOUT_S = 5.0
#: How many times a read-modify-write is retried when another writer changed the document.
MAX_CONFLICT_RETRIES = 100

DELETE = object()  # a mutation's answer meaning "delete the document"
UNCHANGED = object()  # a mutation's answer meaning "already as wanted: write nothing"


@dataclass(frozen=True)
class CloudantConfig:
    url: str
    db: str = DEFAULT_DB
    state_db: str = DEFAULT_STATE_DB
    apikey: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    noauth: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __repr__(self) -> str:  # the URL may embed credentials: never print it
        return f"CloudantConfig(db={self.db!r}, state_db={self.state_db!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "CloudantConfig":
        url = env.get("CLOUDANT_URL", "").strip()
        if not url:
            raise ConfigError("CLOUDANT_URL is not set")
        apikey = env.get("CLOUDANT_APIKEY", "").strip()
        username = env.get("CLOUDANT_USERNAME", "").strip()
        password = env.get("CLOUDANT_PASSWORD", "")
        noauth = env.get("CLOUDANT_AUTH_TYPE", "").strip().lower() == "noauth"
        if not (apikey or (username and password) or noauth):
            raise ConfigError("set CLOUDANT_APIKEY (IAM) or CLOUDANT_USERNAME and CLOUDANT_PASSWORD")
        raw_timeout = env.get("DT_CLOUDANT_TIMEOUT_S", "").strip()
        try:
            timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ConfigError("DT_CLOUDANT_TIMEOUT_S must be a number of seconds") from None
        return cls(
            url=url.rstrip("/"),
            db=env.get("DT_CLOUDANT_DB", "").strip() or DEFAULT_DB,
            state_db=env.get("DT_CLOUDANT_STATE_DB", "").strip() or DEFAULT_STATE_DB,
            apikey=Secret(apikey) if apikey else None,
            username=username or None,
            password=Secret(password) if password else None,
            noauth=noauth,
            timeout_s=timeout,
        )


def build_service(config: CloudantConfig, read_timeout_s: float | None = None):
    """A `CloudantV1` client. The SDK is imported here, on first use, not at import."""
    from ibm_cloud_sdk_core.authenticators import BasicAuthenticator, IAMAuthenticator, NoAuthAuthenticator
    from ibmcloudant.cloudant_v1 import CloudantV1

    if config.apikey is not None:
        authenticator = IAMAuthenticator(config.apikey.reveal())
    elif config.username and config.password is not None:
        authenticator = BasicAuthenticator(config.username, config.password.reveal())
    else:
        authenticator = NoAuthAuthenticator()
    service = CloudantV1(authenticator=authenticator)
    service.set_service_url(config.url)
    # The SDK's default is 60 s; ingest must answer DT within 10 s.
    timeout = (min(3.05, config.timeout_s), read_timeout_s or config.timeout_s)
    service.set_http_config({"timeout": timeout, **environment_options(config.url)})
    service.http_client.trust_env = False  # applied once above, not re-read on every call
    return service


def environment_options(url: str, env: Mapping[str, str] | None = None) -> dict:
    """The proxy and CA-bundle environment for `url` as `requests` options, applied once
    when the client is built instead of the SDK's session re-reading it on every call
    (`core.proxies`)."""
    found = endpoint_environment(url, env)
    options: dict = {}
    if found.proxies:
        options["proxies"] = found.proxies
    if found.ca_bundle:
        options["verify"] = found.ca_bundle
    return options


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) if type(exc).__name__ == "ApiException" else None


def store_error(exc: BaseException, action: str) -> StoreError:
    """A `StoreError` for an SDK failure. Never includes URLs (they may carry credentials)."""
    status = _status(exc)
    if status is not None:
        return StoreError(f"Cloudant answered {status} to {action}")
    return StoreError(f"Cloudant unreachable during {action} ({type(exc).__name__})")


def _is_sdk_error(exc: BaseException) -> bool:
    import requests

    return _status(exc) is not None or isinstance(exc, requests.exceptions.RequestException)


class RevCache:
    """The last version of each document this container wrote or read, so a follow-up
    write (enqueue after claim, complete after enqueue) can skip its read: if the cached
    `_rev` is stale, Cloudant answers 409 and the writer reads afresh."""

    def __init__(self, size: int = 512):
        self._docs: OrderedDict[str, dict] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, doc_id: str) -> dict | None:
        with self._lock:
            return self._docs.get(doc_id)

    def put(self, doc_id: str, doc: dict | None) -> None:
        with self._lock:
            if doc is None:
                self._docs.pop(doc_id, None)
                return
            self._docs[doc_id] = doc
            self._docs.move_to_end(doc_id)
            while len(self._docs) > self._size:
                self._docs.popitem(last=False)


class Docs:
    """One Cloudant database: reads, create-if-absent and conditional read-modify-write.

    `service` is a public attribute so tests can swap in a client pointed at a closed
    port (exactly what an unreachable Cloudant looks like to the SDK).
    """

    def __init__(self, service, db: str, cache: RevCache | None = None):
        self.service = service
        self.db = db
        self.cache = cache if cache is not None else RevCache()

    def call(self, action: str, fn: Callable[[], Any], ok_statuses: tuple[int, ...] = ()):
        """Run one SDK call on this database (`fn`), its errors as `StoreError` naming `action`.
        Returns its result, or the status code if it is in `ok_statuses`."""
        try:
            return fn().get_result()
        except Exception as exc:
            status = _status(exc)
            if status is not None and status in ok_statuses:
                return status
            if _is_sdk_error(exc):
                raise store_error(exc, action) from exc
            raise

    # --- plain reads and writes -------------------------------------------------------

    def get(self, doc_id: str) -> dict | None:
        result = self.call("a read", lambda: self.service.get_document(db=self.db, doc_id=doc_id), (404,))
        doc = None if result == 404 else result
        self.cache.put(doc_id, doc)
        return doc

    def create(self, doc_id: str, body: dict) -> bool:
        """Store `body` only if no live document has this id. False on 409 (it exists)."""
        body = {k: v for k, v in body.items() if k != "_rev"}
        result = self.call(
            "a create", lambda: self.service.put_document(db=self.db, doc_id=doc_id, document=body), (409,)
        )
        if result == 409:
            return False
        self.cache.put(doc_id, {**body, "_id": doc_id, "_rev": result["rev"]})
        return True

    def _put(self, doc_id: str, body: dict, rev: str | None) -> bool:
        body = {k: v for k, v in body.items() if k != "_rev"}
        if rev:
            body["_rev"] = rev
        result = self.call(
            "a write", lambda: self.service.put_document(db=self.db, doc_id=doc_id, document=body), (409,)
        )
        if result == 409:
            self.cache.put(doc_id, None)
            return False
        self.cache.put(doc_id, {**body, "_id": doc_id, "_rev": result["rev"]})
        return True

    def _delete(self, doc_id: str, rev: str) -> bool:
        result = self.call(
            "a delete", lambda: self.service.delete_document(db=self.db, doc_id=doc_id, rev=rev), (404, 409)
        )
        self.cache.put(doc_id, None)
        return result not in (404, 409)

    def update(self, doc_id: str, mutate: Callable[[dict | None], Any], known: dict | None = None) -> bool:
        """Apply `mutate` to the current document and write the result conditionally on its
        `_rev`, re-reading and retrying on 409.

        `mutate(doc_or_None)` returns the new document, `DELETE`, `UNCHANGED` (True without
        a write), or None to refuse (then `update` returns False). An answer that writes
        nothing is only trusted from a fresh read: one based on a cached or `known` copy
        makes `update` read the document afresh and ask again.
        """
        guess = known if known is not None else self.cache.get(doc_id)
        for _ in range(MAX_CONFLICT_RETRIES):
            if guess is not None:
                doc, guess, fresh = guess, None, False
            else:
                doc, fresh = self.get(doc_id), True
            new = mutate(copy.deepcopy(doc) if doc is not None else None)
            if new is None or new is UNCHANGED:
                if fresh:
                    return new is UNCHANGED
                continue
            if new is DELETE:
                if doc is None:
                    return False
                if self._delete(doc_id, doc["_rev"]):
                    return True
                continue
            if doc is None:
                if self.create(doc_id, new):
                    return True
                continue
            if self._put(doc_id, new, doc["_rev"]):
                return True
        raise StoreError("Cloudant document kept changing under concurrent writers")

    # --- queries ----------------------------------------------------------------------

    def find(self, selector: dict, fields: list[str] | None = None, page: int = 200) -> Iterator[dict]:
        """Every document matching a Mango selector, paged with Cloudant's bookmark."""
        bookmark = None
        while True:
            kwargs: dict = {"bookmark": bookmark} if bookmark else {}
            if fields:
                kwargs["fields"] = fields
            result = self.call(
                "a query",
                lambda: self.service.post_find(db=self.db, selector=selector, limit=page, **kwargs),
            )
            docs = result.get("docs", [])
            yield from docs
            new_bookmark = result.get("bookmark")
            if len(docs) < page or not new_bookmark or new_bookmark == bookmark:
                return
            bookmark = new_bookmark

    def find_page(self, selector: dict, fields: list[str], limit: int, sort: list[dict] | None = None) -> list[dict]:
        """The first `limit` documents matching a Mango selector (one request)."""
        kwargs: dict = {"sort": sort} if sort else {}
        result = self.call(
            "a query",
            lambda: self.service.post_find(db=self.db, selector=selector, fields=fields, limit=limit, **kwargs),
        )
        return result.get("docs", [])

    def delete_many(self, docs: list[dict]) -> list[str]:
        """Delete each of `docs` ({_id, _rev}) in one `_bulk_docs` request, each only if its
        `_rev` is still current (a document changed since it was read stays). Returns the
        ids deleted."""
        from ibmcloudant.cloudant_v1 import BulkDocs

        if not docs:
            return []
        body = BulkDocs.from_dict({"docs": [{"_id": d["_id"], "_rev": d["_rev"], "_deleted": True} for d in docs]})
        results = self.call("a bulk delete", lambda: self.service.post_bulk_docs(db=self.db, bulk_docs=body))
        deleted = [r["id"] for r in results if r.get("ok") and not r.get("error")]
        for d in docs:
            self.cache.put(d["_id"], None)
        return deleted

    def info(self) -> dict:
        """The database's information: `doc_count`, `doc_del_count` (tombstones), sizes."""
        return self.call("reading database information", lambda: self.service.get_database_information(db=self.db))

    def key_range(self, start: str, end: str) -> list[dict]:
        """Documents whose ids sort between `start` and `end` (inclusive)."""
        result = self.call(
            "a range read",
            lambda: self.service.post_all_docs(db=self.db, start_key=start, end_key=end, include_docs=True),
        )
        return [row["doc"] for row in result.get("rows", []) if row.get("doc")]

    def changes(self, since: str, limit: int, longpoll_s: float | None = None) -> tuple[list[dict], str]:
        """One page of the changes feed after `since`: (results with docs, last_seq).

        `last_seq` is opaque (a string on Cloudant; pouchdb-server sends an int, which is
        turned into a string here) and is only ever stored and sent back, never compared.
        """
        kwargs: dict = {"feed": "normal"}
        if longpoll_s:
            kwargs = {"feed": "longpoll", "timeout": int(longpoll_s * 1000)}
        result = self.call(
            "reading the changes feed",
            lambda: self.service.post_changes(db=self.db, since=since, limit=limit, include_docs=True, **kwargs),
        )
        return result.get("results", []), str(result.get("last_seq", since))

    def get_local(self, doc_id: str) -> dict | None:
        result = self.call(
            "reading the checkpoint",
            lambda: self.service.get_local_document(db=self.db, doc_id=doc_id, accept="application/json"),
            (404,),
        )
        if result == 404:
            return None
        return result if isinstance(result, dict) else result.json()  # a non-JSON content type

    def put_local(self, doc_id: str, body: dict, rev: str | None) -> str | None:
        """Write a `_local` document (not in the changes feed, never replicated): the
        worker's checkpoint. CouchDB wants the current `_rev`; on 409 (a stale one) it is
        read again and the write repeated: the checkpoint is this worker's alone."""
        for _ in range(3):
            doc = dict(body, _rev=rev) if rev else dict(body)
            result = self.call(
                "saving the checkpoint",
                lambda: self.service.put_local_document(db=self.db, doc_id=doc_id, document=doc),
                (409,),
            )
            if result != 409:
                return result.get("rev")
            current = self.get_local(doc_id)
            rev = current.get("_rev") if current else None
        raise StoreError("the worker checkpoint kept changing: is a second worker running?")

    def ensure_database(self) -> None:
        """Create the database if it does not exist (412 = it already does)."""
        self.call("creating the database", lambda: self.service.put_database(db=self.db), (412,))

    def ensure_index(self, name: str, fields: list[str]) -> None:
        self.call(
            "creating an index",
            lambda: self.service.post_index(db=self.db, index={"fields": fields}, ddoc=name, name=name, type="json"),
        )
