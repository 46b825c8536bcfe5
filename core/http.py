"""Core's own request and response: what every platform adapter converts to and from.

Kept free of any web framework so the same `Receiver` serves Lambda events,
functions-framework's Flask requests, Azure `HttpRequest`s and OpenWhisk dicts (through
`Receiver.handle`), and the ASGI and WSGI apps (`core.asgi`, `core.wsgi`) that
`dtconnector serve`, the Heroku web dyno and a mounted receiver run, alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

HeaderInput = Union[Mapping[str, object], Iterable[tuple[str, object]], None]
#: `json.dumps` with any argument builds a new encoder on every call; every answer is encoded so.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode


class Headers:
    """Case-insensitive, multi-valued headers. Platforms lower-case names (Lambda, Azure,
    OpenWhisk) or keep them (Flask, the local server); DT's docs capitalise them."""

    __slots__ = ("_items",)

    def __init__(self, raw: HeaderInput = None):
        items: dict[str, list[str]] = {}
        pairs = raw.items() if isinstance(raw, Mapping) else (raw or ())
        for name, value in pairs:
            if not isinstance(name, str):
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if v is None:
                    continue
                items.setdefault(name.strip().lower(), []).append(str(v))
        self._items = items

    @classmethod
    def from_asgi(cls, raw: Iterable[tuple[bytes, bytes]]) -> "Headers":
        """From an ASGI scope's ``headers`` (byte pairs, values latin-1): one decode per
        header and no type checks, on the path every event takes (`core.asgi`)."""
        items: dict[str, list[str]] = {}
        for name, value in raw:
            key = name.decode("latin-1").strip().lower()
            values = items.get(key)
            if values is None:
                items[key] = [value.decode("latin-1")]
            else:
                values.append(value.decode("latin-1"))
        headers = cls.__new__(cls)
        headers._items = items
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._items.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._items.get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self) -> str:  # header values may hold API keys: show names only
        return f"Headers({sorted(self._items)})"


@dataclass(frozen=True)
class Request:
    method: str
    body: bytes
    headers: Headers = field(default_factory=Headers)
    path: str = "/"


@dataclass(frozen=True)
class Response:
    status: int
    payload: dict
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> str:
        return _COMPACT_JSON(self.payload)

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.headers}
