"""RabbitMQ (amqp://): quorum queues, publisher confirms, a dead-letter queue, delays in the broker.

What each choice buys (docs/deployment.md, "RabbitMQ"):

- `events`, `emails` and `invoice_run` (the invoice run's chunks) are quorum queues:
  replicated, durable, and they count deliveries, so a message that a worker never
  acknowledges (it died with it, again and again) is dead-lettered after
  `amqp_delivery_limit` deliveries instead of cycling for ever.
- Every publish waits for the broker's confirm (kombu's `confirm_publish`): a publish that
  returned is on disk on the queue's quorum, one that raised is retried by its caller.
- Acknowledgement is the broker's: a worker whose connection closes (killed, or its host gone)
  has its unacknowledged messages handed to another worker at once. No visibility timeout.
- What the broker dead-letters (delivery limit, an expired message, a worker's reject) goes
  through the `dead-letter` exchange to the `dead-letter` queue, which every worker drains into
  the rejected events (workers/broker/dead_letters.py), where ops see every other refusal.
- Retries wait in the broker, not in a worker. Celery holds a countdown or ETA task in the
  worker unacknowledged until it is due; on quorum queues the prefetch is per consumer and
  static (they have no global QoS), so held retries would fill a worker's prefetch and stall
  it, for up to retry_backoff_max. With quorum queues Celery publishes countdowns to its
  native delayed delivery instead (`celery_delayed_*` exchanges and queues, declared by the
  worker), which only serves topic and fanout exchanges: so the two exchanges are topic ones.
- `celery` stays exactly the queue stock Celery declares (classic, direct exchange), so a
  publisher that forgets `queue="events"` can still declare it and reach a worker.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from models.settings import Settings

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
DEAD_LETTER_EXCHANGE = "dead-letter"
DEAD_LETTER_QUEUE = "dead-letter"
QUORUM_QUEUES = ("events", "emails", "invoice_run")


def is_amqp(broker_url: str) -> bool:
    return broker_url.partition("://")[0] in AMQP_SCHEMES


def quorum_arguments(settings: Settings) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        # At-least-once: the message leaves the queue only once the dead-letter queue has it
        # (the default, at-most-once, can lose it in a node failure). RabbitMQ honours it
        # only together with reject-publish; there is no length limit, so no publish is
        # refused for it.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": settings.amqp_delivery_limit,
    }


def task_queues(settings: Settings) -> tuple[Queue, ...]:
    arguments = quorum_arguments(settings)
    quorum = tuple(
        Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments)
        for name in QUORUM_QUEUES
    )
    return (*quorum, Queue("celery", Exchange("celery", type="direct"), routing_key="celery"))


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTER_QUEUE,
        # Fanout: whatever routing key the message had, it lands here.
        Exchange(DEAD_LETTER_EXCHANGE, type="fanout"),
        routing_key="",
        queue_arguments={"x-queue-type": "quorum"},
    )


def amqp_config(settings: Settings) -> dict[str, Any]:
    """The parts of workers.app's configuration that are RabbitMQ's alone."""
    return {
        "task_queues": task_queues(settings),
        "task_default_exchange_type": "topic",
        "broker_transport_options": {"confirm_publish": True},
        # Celery's defaults, spelled out because the design above relies on them: quorum
        # queues are detected (per-consumer QoS, native delayed delivery), and the delay
        # queues are quorum queues too.
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
    }
