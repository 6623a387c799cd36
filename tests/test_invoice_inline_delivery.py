"""An invoice run's chunk sending each notice batch's emails itself, right after the batch's
commit, over a real SMTP server; and staging delivery tasks, as before, while it may not."""

from __future__ import annotations

import time

import payloads
import pytest
from conftest import Apply, Publisher
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_deliver_after_commit import AfterCommit
from test_invoice_chunks import Workers, add_invoices

from models.emails import EmailMessage
from models.outbox import OutboxMessage
from services.db import SessionFactory
from services.invoice_run.run import load_run
from services.outbox import DELIVER_TASK
from tasks.emails import DeliveryUntil


@pytest.fixture
def seven_invoices(apply: Apply) -> None:
    """Seven invoices of one client owing their Invoice Created: with the chunks of
    test_invoice_chunks (batches of 3, chunks of 6), two chunks of 3 + 3 and 1."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    add_invoices(apply, 7)


def test_a_chunk_sends_each_batch_after_its_commit_with_no_delivery_task(
    seven_invoices: None,
    session_factory: SessionFactory,
    publisher: Publisher,
    smtp: SmtpSink,
    db: Session,
) -> None:
    workers = Workers(session_factory, publisher)
    run = workers.start()
    after_commit = AfterCommit(session_factory, smtp)

    ended = [workers.take(key, deliver_now=after_commit) for key in workers.published()]

    assert [outcome.closed_run for outcome in ended] == [False, True]
    # One sending per batch, each of the emails its batch committed.
    assert [len(report.sent) for report in after_commit.reports] == [3, 3, 1]
    assert len(smtp.wait_for(7)) == 7
    messages = db.scalars(select(EmailMessage)).all()
    assert sorted(m.id for m in messages) == sorted(i for r in after_commit.reports for i in r.sent)
    assert {(m.status, m.attempts) for m in messages} == {("sent", 1)}
    assert publisher.deliveries == []
    staged = select(OutboxMessage).where(OutboxMessage.task_name == DELIVER_TASK)
    assert db.scalars(staged).all() == []
    finished = load_run(session_factory, run.id)
    assert (finished.status, finished.counts["emails"]) == ("succeeded", 7)


def test_a_chunk_that_may_not_send_stages_a_delivery_task_per_batch(
    seven_invoices: None,
    session_factory: SessionFactory,
    publisher: Publisher,
    smtp: SmtpSink,
    db: Session,
) -> None:
    workers = Workers(session_factory, publisher)
    run = workers.start()
    after_commit = AfterCommit(session_factory, smtp)
    after_commit.is_ready = False  # its mail paused, or past its deadline

    for key in workers.published():
        workers.take(key, deliver_now=after_commit)

    assert after_commit.reports == []
    assert [len(ids) for ids in publisher.deliveries] == [3, 3, 1]
    assert {(m.status, m.attempts) for m in db.scalars(select(EmailMessage))} == {("queued", 0)}
    assert smtp.messages == []
    assert load_run(session_factory, run.id).counts["emails"] == 7


def test_delivery_until_a_deadline_is_ready_only_before_it_and_while_the_sender_is(
    session_factory: SessionFactory, smtp: SmtpSink
) -> None:
    sender = AfterCommit(session_factory, smtp)
    assert DeliveryUntil.within(sender, None).ready()  # no time limit, no deadline
    assert DeliveryUntil.within(sender, 0).deadline is None
    half = DeliveryUntil.within(sender, 240)
    assert half.deadline is not None
    assert half.deadline > time.monotonic() + 60
    assert half.ready()
    assert not DeliveryUntil(sender, time.monotonic() - 1).ready()
    sender.is_ready = False
    assert not half.ready()
