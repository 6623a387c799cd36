"""The ceiling: a stock Celery app with a no-op task, and nothing of clientflow in it.

    BENCH_BROKER_URL=redis://127.0.0.1:6379/9 celery -A bench.ceiling worker -c 2

No signal handlers, no custom transport or consumer; acks late, prefetch multiplier 4, JSON,
results ignored. bench/run.py times a burst of `bench.noop` through it: the most tasks/s a
Celery worker on this machine, this Redis and this concurrency can move.
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "celery"  # Celery's default queue
TASK = "bench.noop"

app = Celery("ceiling", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9"))
app.conf.update(
    # Named, as clientflow's app names its own (workers/app.py, TRANSPORTS): kombu's stock
    # Redis transport, which is what the ceiling is about.
    broker_transport="kombu.transport.redis:Transport",
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
)


@app.task(name=TASK)
def noop() -> None:
    """Does nothing: what is measured is Celery's and Redis' cost per task."""
