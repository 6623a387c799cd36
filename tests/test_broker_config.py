"""The Celery configuration per broker URL: RabbitMQ's parts only for amqp://, Redis' only for
redis://; and the dead-letter reason as ops read it. In process, no broker needed."""

from __future__ import annotations

from typing import Any

import pytest

from models.settings import Settings
from workers.app import celery_config
from workers.broker.dead_letters import death_reason, task_name_of


def queues(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any] | None]]:
    return {q.name: (q.exchange.type, q.queue_arguments) for q in config["task_queues"]}


@pytest.mark.parametrize("url", ["amqp://guest:guest@rabbit:5672/cf", "amqps://u:p@rabbit/cf"])
def test_rabbitmq_gets_quorum_queues_confirms_and_no_redis_options(url: str) -> None:
    config = celery_config(Settings(broker_url=url, amqp_delivery_limit=7))

    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert "broker_transport" not in config  # kombu's own py-amqp transport
    by_name = queues(config)
    quorum = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "dead-letter",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 7,
    }
    assert by_name == {
        "events": ("topic", quorum),
        "emails": ("topic", quorum),
        "invoice_run": ("topic", quorum),
        "celery": ("direct", None),
    }
    assert config["worker_detect_quorum_queues"] is True


def test_redis_keeps_its_own_transport_and_visibility_timeout() -> None:
    config = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))

    assert config["broker_transport"] == "workers.broker.redis_transport:Transport"
    assert config["broker_transport_options"]["visibility_timeout"] == 3600
    assert "confirm_publish" not in config["broker_transport_options"]
    assert {name: args for name, (_, args) in queues(config).items()} == dict.fromkeys(
        ("events", "emails", "invoice_run", "celery")
    )


def test_the_dead_letter_reason_names_the_queue_and_the_cause() -> None:
    headers = {
        "task": "clients.add",
        "x-first-death-reason": "delivery_limit",
        "x-first-death-queue": "events",
        "x-delivery-count": 20,
        "x-death": [{"reason": "delivery_limit", "queue": "events", "count": 1}],
    }
    assert death_reason(headers) == (
        "dead-lettered by RabbitMQ from queue 'events' (delivery_limit): handed out 20 times "
        "without an acknowledgement (a worker died with it, or returned it, each time)"
    )
    assert task_name_of(headers) == "clients.add"
    assert death_reason({"x-death": [{"reason": "rejected", "queue": "emails"}]}).startswith(
        "dead-lettered by RabbitMQ from queue 'emails' (rejected): a worker rejected it"
    )
    assert death_reason(None) == "dead-lettered by RabbitMQ from queue '?' (unknown): unknown"
    assert task_name_of({}) == "<dead-lettered>"
