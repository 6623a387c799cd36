"""Every worker on RabbitMQ drains the dead-letter queue into the rejected events.

RabbitMQ dead-letters a message from `events` or `emails` when it was handed out
`amqp_delivery_limit` times without an acknowledgement (its workers died with it), when it
expired before a worker took it, or when a worker rejected it (the consumer does so only for
a refusal it could not write to the database). Such a message would otherwise sit in a queue
nobody looks at. Here it is written to the rejected events, under its task and event id, with
the broker's reason, where ops see every other refusal (`clientflow rejected list`, ops
status), and acknowledged. One that cannot be written yet (the database is away) is put back
after a pause and tried again: nothing leaves the dead-letter queue unrecorded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer

from workers.broker.consumer import record_message
from workers.broker.rabbitmq import dead_letter_queue

log = logging.getLogger(__name__)

# A dead letter that could not be recorded goes back to the queue after this long.
RETRY_SECONDS = 5.0
PREFETCH = 10

WHY = {
    "delivery_limit": "handed out {limit} times without an acknowledgement (a worker died with "
    "it, or returned it, each time)",
    "expired": "its time to live ran out before a worker took it",
    "rejected": "a worker rejected it (a refusal it could not record at the time)",
    "maxlen": "the queue was full",
}


def death_reason(headers: dict[str, Any] | None) -> str:
    """The broker's account of why a message was dead-lettered, as one line for people."""
    headers = headers or {}
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    cause = str(headers.get("x-first-death-reason") or first.get("reason") or "unknown")
    queue = headers.get("x-first-death-queue") or first.get("queue") or "?"
    limit = headers.get("x-delivery-count")
    why = WHY.get(cause, cause).format(limit=limit if limit is not None else "too many")
    return f"dead-lettered by RabbitMQ from queue {queue!r} ({cause}): {why}"


def task_name_of(headers: dict[str, Any] | None) -> str:
    name = (headers or {}).get("task")
    return str(name) if name else "<dead-lettered>"


class DeadLetterRecorder(bootsteps.ConsumerStep):
    """A consumer of the dead-letter queue beside Celery's task consumer, on RabbitMQ only."""

    _timer: Any = None

    def include_if(self, parent: Any) -> bool:
        return bool(parent.app.connection_for_write().transport.driver_type == "amqp")

    def start(self, c: Any) -> None:
        self._timer = c.timer
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # on_message: the raw message, never decoded, so any body (even one that cannot be
        # decoded, which may be why it is here) is taken.
        return [
            Consumer(
                channel,
                queues=[dead_letter_queue()],
                on_message=self.on_dead_letter,
                # Read to find the task and event id: JSON only, as the task consumer.
                accept=["json"],
                prefetch_count=PREFETCH,
            )
        ]

    def on_dead_letter(self, message: Any) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        if record_message(task_name_of(headers), message, death_reason(headers)):
            message.ack()
            return
        log.warning("a dead-lettered message goes back to its queue for %.0f s", RETRY_SECONDS)
        self._timer.call_after(RETRY_SECONDS, self._requeue, (message,))

    @staticmethod
    def _requeue(message: Any) -> None:
        try:
            message.requeue()
        except Exception as exc:  # the channel closed meanwhile: the broker put it back
            log.info("a dead-lettered message was returned with its channel: %s", exc)
