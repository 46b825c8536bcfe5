"""Turn an `eventId` (any string DT or an attacker sends) into a key valid in every store.

Firestore document ids forbid ``/`` and ``__x__``, Table Storage row keys forbid
``/ \\ # ?`` and control characters, Cloudant ids must not start with ``_``, and most
stores cap key length. Real DT event ids are short base32-ish strings, so those pass
through unchanged (readable in a console); anything else becomes ``h_`` plus the SHA-256
of its UTF-8 bytes, and so does the id ``null``, which JavaScript CouchDB servers such as
pouchdb-server (our IBM stand-in) refuse. Plain keys never contain ``_``, so the two
forms cannot collide, and namespaces (``w_`` for the worker's ledger) cannot collide with
either.
"""

from __future__ import annotations

import hashlib
import re

_PLAIN = re.compile(r"[A-Za-z0-9-]{1,128}")


def store_key(event_id: str, namespace: str = "") -> str:
    """The storage key for `event_id`; `namespace` is a short ``[a-z]`` prefix or empty."""
    if _PLAIN.fullmatch(event_id) and event_id != "null":
        key = event_id
    else:
        digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
        key = "h_" + digest
    return f"{namespace}_{key}" if namespace else key
