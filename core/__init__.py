"""dtconnector core: receive Disruptive Technologies Data Connector events on any cloud.

Users write handlers::

    from core import on

    @on("temperature")
    def record(event):
        print(event.device_id, event.data.value)

This package imports no cloud SDK and, at import, nothing heavier than the standard
library: the signature verifier (PyJWT) loads with `core.receiver`, which only ingest
entry points import.
"""

from .events import Event, parse_event
from .handlers import on, registry

__all__ = ["Event", "on", "parse_event", "registry"]
