"""The Celery app: one configuration for publishers and workers, chosen from settings.

Run a worker with `celery -A workers.app worker` (queues `events`, `emails`, `invoice_run`,
`celery`) and one
`celery -A workers.app beat` for the scheduled runs (the outbox relay, the invoice run).
"""

from __future__ import annotations

import math
from typing import Any

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from models.settings import Settings, get_settings
from services.invoice_run.handoff import CHUNK_TASK
from workers import signals as _process_signals  # noqa: F401  (connects the process hooks)
from workers.broker import rabbitmq, redis_transport
from workers.broker.dead_letters import DeadLetterRecorder
from workers.telemetry import hooks as _ops_hooks  # noqa: F401  (connects the ops signal handlers)

# The app's own transports, named in its configuration (broker_transport) instead of rebinding
# kombu's URL schemes for the whole process: redis:// gets the one that survives foreign
# entries and killed workers, filesystem:// the one whose writes a polling worker never sees
# half done.
TRANSPORTS = {
    "redis": "workers.broker.redis_transport:Transport",
    "rediss": "workers.broker.redis_transport:Transport",
    "filesystem": "workers.broker.filesystem_transport:Transport",
}

TASK_MODULES = [
    "tasks.events",
    "tasks.emails",
    "tasks.outbox",
    "tasks.invoices",
    "tasks.ops",
]


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
        # acks_late tasks that fail (a bug, or a dead letter already recorded) are acknowledged:
        # redelivering them would only fail again.
        "task_acks_on_failure_or_timeout": True,
        # Messages each pool process may hold ahead (acknowledged late, so a dead worker's
        # come back). Default one: tasks are short and uneven (an email batch holds an SMTP
        # connection), so a worker should not sit on messages an idle one could take;
        # measured, 4 gave no more throughput here and a worse latency (bench/README.md).
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        # A worker started before Redis is up waits for it instead of exiting.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # When the broker connection drops, running late-ack tasks cannot be acknowledged any
        # more and will be redelivered; cancel them rather than let two copies run. The one
        # step that must not be cut (SMTP 250 to the commit of `sent`) holds the SIGTERM this
        # sends until it is done: tasks/shield.py.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Our consumer records undecodable messages instead of only logging them.
        "worker_consumer": "workers.broker.consumer:RecordingConsumer",
        "beat_schedule": {
            "outbox-relay": {"task": "outbox.relay", "schedule": settings.outbox_relay_seconds},
            # Two beats firing at once (or one firing twice) is harmless: see tasks/invoices.py.
            "invoices-run": {"task": "invoices.run", "schedule": invoice_run_schedule(settings)},
            # Hourly; two at once are safe (see tasks/ops.py).
            "ops-housekeeping": {"task": "ops.housekeeping", "schedule": 3600.0},
        },
        # Queues of their own so a backlog of emails or of a run's chunks never delays client
        # changes (and ops can see each).
        # Each has its own exchange and key: sharing one would copy every message into both.
        "task_default_queue": "events",
        "task_default_exchange": "events",
        "task_default_routing_key": "events",
        "task_queues": (
            Queue("events", Exchange("events", type="direct"), routing_key="events"),
            Queue("emails", Exchange("emails", type="direct"), routing_key="emails"),
            # The chunks of invoice runs: hundreds at once for a large run, which on `events`
            # would queue client changes behind the whole run.
            Queue("invoice_run", Exchange("invoice_run", type="direct"), routing_key="invoice_run"),
            # Celery's stock default queue: a publisher that calls send_task without
            # queue="events" still reaches a worker instead of waiting forever.
            Queue("celery", Exchange("celery", type="direct"), routing_key="celery"),
        ),
        # (On RabbitMQ the queues are quorum queues on topic exchanges: rabbitmq.amqp_config.)
        "task_routes": {
            "emails.*": {"queue": "emails"},
            # By name: the invoice events (invoices.upsert, ...) stay on `events`.
            CHUNK_TASK: {"queue": "invoice_run"},
        },
        # Task events cost broker messages on every task; Flower and `celery events` switch
        # the workers' on while they watch (enable_events), so they are off unless asked for.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "timezone": "UTC",
        "enable_utc": True,
    }
    if rabbitmq.is_amqp(settings.broker_url):
        # Quorum queues, publisher confirms, native delayed retries: workers/broker/rabbitmq.py.
        config.update(rabbitmq.amqp_config(settings))
    scheme = settings.broker_url.partition("://")[0]
    if scheme in TRANSPORTS:
        config["broker_transport"] = TRANSPORTS[scheme]
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
        config["broker_transport_options"] = {
            # An unacknowledged message (its worker died) goes to another worker after this
            # long. Above retry_backoff_max (checked in Settings): a retry waiting for its
            # countdown is held unacknowledged and must not be handed out twice.
            "visibility_timeout": settings.redis_visibility_timeout,
            "unacked_restore_interval": settings.redis_restore_interval,
            "unacked_restore_throttle": 1,
            # A scan holds a lock in Redis; if Redis stops mid-scan the lock outlives it and
            # no worker scans (restores a dead worker's messages) until it expires.
            "unacked_mutex_expire": settings.redis_restore_lock_seconds,
            # Read by workers/broker/redis_transport.py: pop and record in one step.
            "reliable_fetch": settings.redis_reliable_fetch,
        }
    return config


def invoice_run_schedule(settings: Settings) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = settings.invoice_run_cron.split()
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


def configure(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # One line and no worker, rather than a failure on the first message.
        redis_transport.check_kombu()
    return celery_config(settings)


class ClientflowCelery(Celery):
    """Celery, with countdowns that its native delayed delivery (RabbitMQ) can carry.

    With quorum queues Celery sends a countdown through its delay exchanges in whole seconds
    and raises ValueError ("countdown must be a positive number") for one under a second;
    a task retrying that way was rejected, and dead-lettered instead of retried (the fault
    suite's RabbitMQ runs, whose backoff starts at 0.2 s, found it). Counted up to whole
    seconds, a retry waits at least as long as asked and arrives when it is due.
    """

    def send_task(self, *args: Any, **options: Any) -> Any:
        countdown = options.get("countdown")
        if countdown and countdown > 0 and rabbitmq.is_amqp(str(self.conf.broker_url)):
            options["countdown"] = float(math.ceil(countdown))
        return super().send_task(*args, **options)


def create_app(settings: Settings | None = None) -> Celery:
    """The app for these settings, or, without any, for the environment's.

    The environment is read when the configuration is first used, not on import: importing
    the app has no side effect, and a command that fails on a setting can explain it in one
    line (workers/cli).
    """
    celery = ClientflowCelery("clientflow", include=TASK_MODULES)
    # Drains RabbitMQ's dead-letter queue into the rejected events; includes itself on AMQP only.
    celery.steps["consumer"].add(DeadLetterRecorder)
    if settings is None:
        celery.add_defaults(lambda: configure(get_settings()))
    else:
        celery.conf.update(configure(settings))
    return celery


app = create_app()
