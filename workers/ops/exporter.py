"""Prometheus metrics, read fresh from the broker, the workers and the database on each scrape.

A custom collector rather than counters kept in memory: workers are many processes on many
hosts, so the shared truth is the broker and task_stats, and the exporter only reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from celery import Celery
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError

from services.db import SessionFactory
from workers.ops import stats, tables
from workers.ops.snapshot import Snapshot
from workers.ops.status import build_snapshot


class ClientflowCollector:
    def __init__(self, app: Celery, session_factory: SessionFactory) -> None:
        self._app = app
        self._sessions = session_factory

    def collect(self) -> Iterator[Metric]:
        snapshot = build_snapshot(self._app, self._sessions)
        broker_up = snapshot.workers is not None
        yield _gauge("clientflow_broker_up", "1 when the broker answered this scrape.", broker_up)

        depth = GaugeMetricFamily(
            "clientflow_queue_messages", "Messages waiting in the queue.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "clientflow_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message (0 when empty; absent when it has no publish time).",
            labels=["queue"],
        )
        unacked = GaugeMetricFamily(
            "clientflow_queue_unacked_messages",
            "Messages delivered to a worker and not yet acknowledged.",
            labels=["queue"],
        )
        scheduled = GaugeMetricFamily(
            "clientflow_queue_scheduled_messages",
            "Tasks held by workers until their ETA or countdown.",
            labels=["queue"],
        )
        for q in snapshot.queues:
            if q.depth is not None:
                depth.add_metric([q.name], q.depth)
                if q.depth == 0:
                    oldest.add_metric([q.name], 0.0)
                elif q.oldest_age_seconds is not None:
                    oldest.add_metric([q.name], q.oldest_age_seconds)
            if q.unacked is not None:
                unacked.add_metric([q.name], q.unacked)
            if q.scheduled is not None:
                scheduled.add_metric([q.name], q.scheduled)
        yield from (depth, oldest, unacked, scheduled)

        if snapshot.workers is not None:
            yield _gauge(
                "clientflow_workers_online", "Workers that answered a ping.", len(snapshot.workers)
            )
            active = GaugeMetricFamily(
                "clientflow_worker_active_tasks", "Tasks running on the worker.", labels=["worker"]
            )
            for w in snapshot.workers:
                active.add_metric([w.name], len(w.active))
            yield active

        yield from self._database_metrics(snapshot)

    def _database_metrics(self, snapshot: Snapshot) -> Iterator[Metric]:
        up = "1 when the database answered this scrape."
        emails, dead, rejected = snapshot.emails, snapshot.dead_letters, snapshot.rejected_events
        try:
            with self._sessions() as session:
                totals = stats.outcome_totals(session)
                successes = tables.last_successes(session)
        except SQLAlchemyError:
            emails = None
        if emails is None or dead is None or rejected is None:
            yield _gauge("clientflow_database_up", up, False)
            return
        yield _gauge("clientflow_database_up", up, True)

        runs = CounterMetricFamily(
            "clientflow_task_outcomes",
            "Task runs by outcome (succeeded, rejected, failed, retried), from task_stats.",
            labels=["task", "outcome"],
        )
        runtime = CounterMetricFamily(
            "clientflow_task_runtime_seconds",
            "Seconds spent in task runs by final state; divide by the outcomes for the mean.",
            labels=["task", "outcome"],
        )
        for t in totals:
            runs.add_metric([t.task_name, t.outcome], t.count)
            runtime.add_metric([t.task_name, t.outcome], t.runtime_seconds)
        yield from (runs, runtime)

        by_status = GaugeMetricFamily(
            "clientflow_emails", "Emails in the message log by status.", labels=["status"]
        )
        for status, count in emails.model_dump().items():
            by_status.add_metric([status], count)
        yield by_status

        letters = GaugeMetricFamily(
            "clientflow_dead_letters",
            "Dead letters in the store; state is new (not replayed) or replayed.",
            labels=["state"],
        )
        letters.add_metric(["new"], dead.not_replayed)
        letters.add_metric(["replayed"], dead.total - dead.not_replayed)
        yield letters
        yield _gauge("clientflow_rejected_events", "Events refused, all time.", rejected.total)

        since = GaugeMetricFamily(
            "clientflow_scheduled_run_last_success_age_seconds",
            "Seconds since the newest successful run of the scheduled job finished.",
            labels=["name"],
        )
        for name, finished in sorted(successes.items()):
            age = (snapshot.taken_at - finished).total_seconds()
            since.add_metric([name], max(0.0, age))
        yield since
        yield from _table_metrics(snapshot)


def _table_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    if snapshot.tables is None:
        return
    rows = GaugeMetricFamily(
        "clientflow_table_rows",
        "Rows of the tables that grow with traffic (PostgreSQL: its statistics' estimate).",
        labels=["table"],
    )
    size = GaugeMetricFamily(
        "clientflow_table_bytes",
        "Bytes of the tables that grow with traffic, with indexes and TOAST (PostgreSQL only).",
        labels=["table"],
    )
    for table in snapshot.tables:
        rows.add_metric([table.table], table.rows)
        if table.bytes is not None:
            size.add_metric([table.table], table.bytes)
    yield from (rows, size)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


DEFAULT_HOST = "127.0.0.1"


def serve(
    app: Celery,
    session_factory: SessionFactory,
    port: int,
    host: str = DEFAULT_HOST,
    ready: Callable[[str], object] | None = None,
) -> None:
    """Serve /metrics on host:port until the process is stopped; ready(url) once listening.

    An address that cannot be listened on (in use, not of this host) raises OSError whose
    filename is "host:port", so the message can say which.
    """
    # Our own registry: the default one would add this exporter's Python process metrics,
    # which say nothing about clientflow.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClientflowCollector(app, session_factory))
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        start_http_server(port, host, registry=registry)
    except OSError as exc:
        exc.filename = where
        raise
    if ready is not None:
        ready(f"http://{where}/metrics")
    threading.Event().wait()
