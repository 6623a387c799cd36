"""A backlog of events through a real worker, applied together (workers/batching.py), with
every event's outcome what it would have been one at a time: on Redis and on RabbitMQ.

The events are published before the worker starts, so they are waiting when it does: the
case batches are for. Among them are the cases a batch leaves to each event's own task: a
redelivered event, an email already taken, an invalid payload, and contacts published before
their clients (held, then released by the batch that adds the client).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import payloads
import pytest
from rabbitmq_server import Vhost
from smtp_sink import SmtpSink
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_invoice_worker import load
from worker_process import WorkerProcess, wait_until, worker_fixture

from models.clients import Client, Contact
from models.emails import EmailMessage, EmailStatus
from models.records import ProcessedEvent, RejectedEvent

pytestmark = pytest.mark.worker

CLIENTS = 150
stopped_worker = worker_fixture(name="stopped_worker", start=False)


def backlog() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """The events to publish, and how many of each outcome they should end in."""
    events: list[tuple[str, dict[str, Any]]] = []
    for number in range(10):  # contacts first: their clients come later in the backlog
        events.append(("contacts.add", payloads.contact(f"K{number}", f"B{number * 7:03d}")))
    for number in range(CLIENTS):
        add = payloads.client(f"B{number:03d}")
        events.append(("clients.add", add))
        if number % 30 == 0:
            events.append(("clients.add", dict(add)))  # the same event, redelivered
        if number % 30 == 1:  # another client's email
            events.append(("clients.add", payloads.client(f"X{number}", email=add["email"])))
        if number % 30 == 2:
            events.append(("clients.add", payloads.client(f"Y{number}", email="not an address")))
    expected = {"clients": CLIENTS, "taken": 5, "invalid": 5, "contacts": 10}
    return events, expected


def refused_count(session: Session) -> int:
    """Events refused for good (not those held for a client to come)."""
    query = select(func.count()).select_from(RejectedEvent)
    return session.scalar(query.where(RejectedEvent.waiting_for.is_(None))) or 0


def one_of_each_applied(session: Session, pairs: list[tuple[str, str]]) -> bool:
    ids = [event_id for pair in pairs for event_id in pair]
    applied = set(
        session.scalars(select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(ids)))
    )
    return all(len(applied & set(pair)) == 1 for pair in pairs)


def applied_together(worker: WorkerProcess, task_name: str) -> list[int]:
    """The sizes of the batches the pool says it applied. Waited for: the pool logs a batch
    once its job returns, after its emails are sent and recorded, so a test that has just
    seen the last one recorded can read the log before the line is there."""
    pattern = re.compile(rf"(\d+) of \d+ {re.escape(task_name)} events applied together")

    def sizes() -> list[int]:
        return [int(n) for n in pattern.findall(worker.log_text())]

    return wait_until(sizes, lambda: f"a batch logged; log tail:\n{worker.log_tail()}")


def run_backlog(worker: WorkerProcess, smtp: SmtpSink) -> None:
    events, expected = backlog()
    for name, payload in events:
        worker.publish(name, payload)
    worker.start()
    # A client and another published right after it with the same email: two pool processes
    # may apply them at once (in different batches, or one on its own), and publish order is
    # no order between different clients' events: whichever commits first keeps the address,
    # the other is refused as taken.
    first_with = {
        p["email"]: p["event_id"]
        for name, p in events
        if name == "clients.add" and p["client_id"].startswith("B")
    }
    contested = [
        (first_with[p["email"]], p["event_id"]) for _, p in events if p["client_id"].startswith("X")
    ]
    assert len(contested) == expected["taken"]
    either = {event_id for pair in contested for event_id in pair}
    good = [
        p["event_id"]
        for _, p in events
        if (p["client_id"].startswith("B") or p.get("contact_id", "").startswith("K"))
        and p["event_id"] not in either
    ]
    worker.wait_applied(*good)
    worker.wait_for_db(
        lambda s: one_of_each_applied(s, contested), "each contested email kept by one client"
    )
    # The events a batch leaves to their own tasks (the taken emails, the invalid ones) may
    # still be running when the last good one is applied: wait for their rejections too.
    refusals = expected["taken"] + expected["invalid"]
    worker.wait_for_db(lambda s: refused_count(s) >= refusals, f"{refusals} events refused")

    with worker.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Client)) == expected["clients"]
        assert session.scalar(select(func.count()).select_from(Contact)) == expected["contacts"]
        refused = session.scalars(
            select(RejectedEvent.reason).where(RejectedEvent.waiting_for.is_(None))
        ).all()
        taken = [r for r in refused if r.startswith("Duplicate Email Address")]
        assert len(taken) == expected["taken"], refused
        assert len(refused) == expected["taken"] + expected["invalid"], refused
        waited = session.scalars(
            select(RejectedEvent.released_at).where(RejectedEvent.waiting_for.is_not(None))
        ).all()
        assert len(waited) == expected["contacts"]
        assert None not in waited
    # One welcome email per client, each received once, and recorded sent.
    received = smtp.wait_for(CLIENTS, timeout=60)
    counts = Counter(address.lower() for m in received for address in m.rcpt_tos)
    assert len(counts) == CLIENTS
    assert set(counts.values()) == {1}, counts.most_common(3)
    worker.wait_for_db(
        lambda s: (
            s.scalar(select(func.count()).where(EmailMessage.status == EmailStatus.SENT)) == CLIENTS
        ),
        "every welcome email recorded sent",
    )
    # And batches applied them: the pool logs each.
    assert max(applied_together(worker, "clients.add")) > 1
    # Every message acknowledged (a batch's together, on Redis): none left for redelivery.
    worker.wait_idle()


def test_a_backlog_is_applied_in_batches_with_every_outcome_kept(
    stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    run_backlog(stopped_worker, smtp)


@pytest.fixture
def rabbit_stopped_worker(
    rabbitmq_vhost: Vhost,
    new_postgres_database: Callable[[], str],
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    # On RabbitMQ's quorum queues a worker's prefetch is fixed: batches form from what the
    # prefetch multiplier lets it hold (docs/deployment.md).
    worker = WorkerProcess(
        broker_url=rabbitmq_vhost.url,
        vhost=rabbitmq_vhost,
        database_url=new_postgres_database(),
        smtp_url=smtp.url,
        workdir=tmp_path / "worker",
        extra_settings={"worker_prefetch_multiplier": "16"},
    )
    try:
        yield worker
    finally:
        worker.close()


def test_a_backlog_on_rabbitmq_is_applied_in_batches_with_every_outcome_kept(
    rabbit_stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    run_backlog(rabbit_stopped_worker, smtp)


def test_a_backlog_of_notifications_is_sent_in_batches_each_email_once(
    stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = stopped_worker
    notifications, contacts = 40, 3
    for number in range(notifications):
        load(worker, "clients.add", payloads.client(f"N{number:02d}", send_welcome=False))
        for contact in range(contacts):
            contact_id = f"K{number:02d}x{contact}"
            load(worker, "contacts.add", payloads.contact(contact_id, f"N{number:02d}", "general"))
    events = [payloads.notification(f"N{number:02d}") for number in range(notifications)]
    for payload in events:
        worker.publish("notifications.send", payload)
    worker.start()

    worker.wait_applied(*(p["event_id"] for p in events))
    emails = notifications * (contacts + 1)
    received = smtp.wait_for(emails, timeout=60)
    counts = Counter(address.lower() for m in received for address in m.rcpt_tos)
    assert len(counts) == emails
    assert set(counts.values()) == {1}, counts.most_common(3)
    worker.wait_no_email_owed()
    assert max(applied_together(worker, "notifications.send")) > 1
