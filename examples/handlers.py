"""Your handlers. DT_HANDLERS=handlers names this module (a bundle's README.md says where it is set).

Each function runs once per event (redeliveries and DT's duplicates are filtered out
before it is called). Raise to have the event retried; after a bounded number of
attempts it goes to the platform's dead-letter queue.
"""

import logging

from core import on

log = logging.getLogger("dtconnector.handlers")


@on("temperature")
def record_temperature(event):
    log.info("%s is %s °C at %s", event.device_id, event.data.value, event.timestamp.isoformat())


@on("*")
def everything(event):
    log.debug("received %s %s", event.event_type, event.event_id)
