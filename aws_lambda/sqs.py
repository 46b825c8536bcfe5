"""Core's EventQueue on an SQS standard queue (``DT_QUEUE_URL``).

`SendMessage` returns only after SQS has stored the message redundantly, which is the
"durably queued" core needs before answering DT 2xx. The body is the verified request
body as text; the ``eventId`` message attribute lets the dead-letter queue be searched
without parsing bodies.
"""

from __future__ import annotations

import re

from core.keys import store_key
from core.ports import QueueError

from .errors import translated

# Characters SQS accepts in message attribute values; anything else (an attacker's event
# id with control characters) is replaced by its store key, a safe ASCII hash.
_SQS_TEXT = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]{1,256}")


def event_id_attribute(event_id: str) -> str:
    return event_id if _SQS_TEXT.fullmatch(event_id) else store_key(event_id)


class SqsEventQueue:
    def __init__(self, client, queue_url: str):
        self._client = client
        self._url = queue_url

    def enqueue(self, message: str, *, event_id: str) -> None:
        with translated("SQS SendMessage", QueueError):
            self._client.send_message(
                QueueUrl=self._url,
                MessageBody=message,
                MessageAttributes={"eventId": {"DataType": "String", "StringValue": event_id_attribute(event_id)}},
            )
