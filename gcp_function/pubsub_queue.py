"""Core's `EventQueue` on Pub/Sub: publish, then wait for the server's acknowledgement (the
message id), so ingest answers DT only once the message is stored."""

from __future__ import annotations

from core.ports import QueueError

#: Seconds to wait for Pub/Sub to confirm a publish (DT allows 10 s for the whole request).
PUBLISH_DEADLINE_S = 5.0


class PubSubQueue:
    def __init__(self, publisher, topic: str, deadline_s: float = PUBLISH_DEADLINE_S, rebuild=None):
        self._publisher = publisher  # google.cloud.pubsub_v1.PublisherClient
        self._topic = topic  # projects/P/topics/T
        self._deadline_s = deadline_s
        # After an unexpected publisher error the client can stay wedged ("Publish after
        # stop() or publish error"): `rebuild` makes a fresh one for the next request.
        self._rebuild = rebuild

    def enqueue(self, message: str, *, event_id: str) -> None:
        import concurrent.futures

        from google.api_core.exceptions import GoogleAPIError
        from google.api_core.retry import Retry, if_exception_type
        from google.api_core import exceptions as e
        from google.auth.exceptions import GoogleAuthError

        retry = Retry(
            predicate=if_exception_type(e.ServiceUnavailable, e.DeadlineExceeded, e.InternalServerError, e.Aborted, e.ResourceExhausted),
            initial=0.05,
            maximum=1.0,
            multiplier=2.0,
            timeout=self._deadline_s,
        )
        try:
            future = self._publisher.publish(
                self._topic, message.encode("utf-8"), retry=retry, timeout=self._deadline_s, eventId=event_id
            )
            future.result(timeout=self._deadline_s + 0.5)
        except concurrent.futures.TimeoutError as exc:
            # The publish may still land later: then the event is queued twice (DT retries
            # our 503), and the worker's ledger runs the handlers once.
            raise QueueError("Pub/Sub publish was not confirmed in time") from exc
        except (GoogleAPIError, GoogleAuthError) as exc:
            raise QueueError(f"Pub/Sub publish failed ({type(exc).__name__})") from exc
        except Exception as exc:
            if self._rebuild is not None:
                self._publisher = self._rebuild()
            raise QueueError(f"Pub/Sub publisher failed ({type(exc).__name__})") from exc
