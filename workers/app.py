"""The Celery app: one configuration for publishers and workers, chosen from settings.

Run a worker with `celery -A workers.app worker`; it consumes the `events` and `emails` queues.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from workers.settings import Settings, get_settings

# Redis redelivers an unacknowledged message after this long. It must stay above the longest
# retry countdown (retry_backoff_max) or a message waiting for its retry is delivered twice.
REDIS_VISIBILITY_TIMEOUT = 3600

TASK_MODULES = ["tasks.clients", "tasks.contacts", "tasks.notifications", "tasks.emails"]


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        # JSON only: a payload that is not plain data fails at the publisher, not in a worker.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Effects land in the database; nobody waits on task results.
        "task_ignore_result": True,
        # Every task is idempotent (inbox + message log), so acknowledge only after the work
        # is done, and give the message back if the worker process dies mid-task.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Tasks are short; taking one at a time keeps a slow email batch from holding events.
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        # Two queues so a backlog of emails never delays client changes (and ops can see each).
        # Each has its own exchange and key: sharing one would copy every message into both.
        "task_default_queue": "events",
        "task_default_exchange": "events",
        "task_default_routing_key": "events",
        "task_queues": (
            Queue("events", Exchange("events", type="direct"), routing_key="events"),
            Queue("emails", Exchange("emails", type="direct"), routing_key="emails"),
            # Celery's stock default queue: a publisher that calls send_task without
            # queue="events" still reaches a worker instead of waiting forever.
            Queue("celery", Exchange("celery", type="direct"), routing_key="celery"),
        ),
        "task_routes": {"emails.*": {"queue": "emails"}},
        # Task events let Flower and `celery events` see what the workers do.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "timezone": "UTC",
        "enable_utc": True,
    }
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Files are polled; the default 1 s makes every hop of the demo wait a second.
            "polling_interval": 0.1,
        }
    elif settings.broker_url.startswith(("redis", "rediss")):
        config["broker_transport_options"] = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT}
    return config


def prepare_embedded_broker(settings: Settings) -> None:
    """The filesystem transport needs its folders; made on use, not on import."""
    if settings.broker_url.startswith("filesystem"):
        for sub in ("queue", "processed", "control"):
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


@signals.celeryd_init.connect
def _prepare_worker(**_: Any) -> None:
    prepare_embedded_broker(get_settings())


def create_app(settings: Settings | None = None) -> Celery:
    celery = Celery("clientflow", include=TASK_MODULES)
    celery.conf.update(celery_config(settings or get_settings()))
    return celery


app = create_app()
