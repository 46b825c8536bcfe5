"""Core's EventQueue on an Azure Storage queue, in the encoding the queue trigger expects.

`send_message` returns once the service has stored the message, so `ingest` answers DT
only after the event is durable. Messages are base64 text (`TextBase64EncodePolicy`),
which is what the Functions queue trigger decodes by default. A Storage queue message is
at most 64 KiB after encoding, so bodies up to 48 KiB fit (the Azure entry point's
default `DT_MAX_BODY_BYTES`).
"""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from core.ports import QueueError

from .clients import translated

MAX_MESSAGE_BYTES = 48 * 1024  # 64 KiB of base64


class StorageEventQueue:
    def __init__(self, client):
        self.client = client

    def enqueue(self, message: str, *, event_id: str) -> None:
        for attempt in range(2):
            try:
                with translated("queue send", QueueError):
                    self.client.send_message(message)
                return
            except QueueError as exc:
                if isinstance(exc.__cause__, ResourceNotFoundError) and attempt == 0:
                    self._create_queue()  # QueueNotFound: first use of a fresh account
                    continue
                raise

    def _create_queue(self) -> None:
        try:
            with translated("queue creation", QueueError):
                self.client.create_queue()
        except QueueError as exc:
            if not isinstance(exc.__cause__, ResourceExistsError):
                raise
