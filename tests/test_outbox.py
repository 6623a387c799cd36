"""The outbox: effects committed with the change survive a broker that is away at commit."""

from __future__ import annotations

from datetime import timedelta

import payloads
from conftest import Apply, Publisher
from smtp_sink import SmtpSink
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import EmailMessage, OutboxMessage
from models.base import utcnow
from services.db import SessionFactory
from services.dispatch import Outcome
from services.mail.delivery import deliver_messages
from services.mail.transports import SmtpTransport
from services.outbox import relay

NOW = timedelta(0)
LEASE = timedelta(minutes=5)
FORGOTTEN = timedelta(hours=2)


def test_effects_are_committed_with_the_change_and_published_after(
    apply: Apply, db: Session, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1"))
    row = db.scalars(select(OutboxMessage)).one()
    assert row.task_name == "emails.deliver"
    assert row.published_at is not None
    assert publisher.deliveries == [row.kwargs["message_ids"]]


def test_broker_down_at_commit_delays_the_effect_but_keeps_it(
    apply: Apply, db: Session, publisher: Publisher, session_factory: SessionFactory
) -> None:
    publisher.down = True
    result = apply("clients.add", payloads.client("C1"))

    assert result.outcome is Outcome.APPLIED  # the change itself is committed
    row = db.scalars(select(OutboxMessage)).one()
    assert (row.published_at, row.attempts) == (None, 1)
    assert row.last_error == "ConnectionRefusedError: broker unreachable"
    assert (
        relay(
            session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN
        )
        == 0
    )

    publisher.down = False
    assert (
        relay(
            session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN
        )
        == 1
    )

    db.refresh(row)
    assert row.published_at is not None
    assert publisher.deliveries == [row.kwargs["message_ids"]]
    assert (
        relay(
            session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN
        )
        == 0
    )


def test_relay_leaves_young_rows_to_their_own_publish(
    apply: Apply, publisher: Publisher, session_factory: SessionFactory
) -> None:
    publisher.down = True
    apply("clients.add", payloads.client("C1"))
    publisher.down = False
    young = relay(
        session_factory,
        publisher,
        min_age=timedelta(minutes=1),
        sending_lease=LEASE,
        forgotten_after=FORGOTTEN,
    )
    assert young == 0
    assert publisher.sent == []


def test_relay_requeues_an_email_abandoned_in_sending(
    apply: Apply,
    db: Session,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("clients.add", payloads.client("C1"))
    (message_id,) = publisher.message_ids
    # A worker claimed it and died before recording the outcome, ten minutes ago.
    db.execute(
        update(EmailMessage)
        .where(EmailMessage.id == message_id)
        .values(status="sending", claimed_at=utcnow() - timedelta(minutes=10), attempts=1)
    )
    db.commit()
    publisher.sent.clear()

    relay(session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN)

    assert publisher.deliveries == [[message_id]]
    deliver_messages([message_id], session_factory, SmtpTransport(smtp.url), "a@b.example", 3)
    assert len(smtp.wait_for(1)) == 1
    db.expire_all()
    message = db.get(EmailMessage, message_id)
    assert message is not None
    assert (message.status, message.attempts) == ("sent", 2)


def test_a_fresh_claim_is_not_taken_from_its_worker(
    apply: Apply, db: Session, publisher: Publisher, session_factory: SessionFactory
) -> None:
    apply("clients.add", payloads.client("C1"))
    (message_id,) = publisher.message_ids
    db.execute(
        update(EmailMessage)
        .where(EmailMessage.id == message_id)
        .values(status="sending", claimed_at=utcnow())
    )
    db.commit()
    publisher.sent.clear()
    relay(session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN)
    assert publisher.sent == []


def age_email(db: Session, message_id: str, age: timedelta) -> None:
    db.execute(
        update(EmailMessage).where(EmailMessage.id == message_id).values(updated_at=utcnow() - age)
    )
    db.commit()


def test_relay_stages_a_new_delivery_for_an_email_whose_task_was_lost(
    apply: Apply,
    db: Session,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("clients.add", payloads.client("C1"))
    apply("clients.add", payloads.client("C2"))
    lost, live = publisher.message_ids
    # The first email's delivery task vanished with a killed worker three hours ago; the
    # second was queued a minute ago and its task is still on its way.
    age_email(db, lost, timedelta(hours=3))
    age_email(db, live, timedelta(minutes=1))
    publisher.sent.clear()

    relay(session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN)

    assert publisher.deliveries == [[lost]]
    # The row's clock restarted: the next relay does not stage it again.
    relay(session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN)
    assert publisher.deliveries == [[lost]]
    deliver_messages([lost], session_factory, SmtpTransport(smtp.url), "a@b.example", 3)
    assert len(smtp.wait_for(1)) == 1
    db.expire_all()
    statuses = {m.id: m.status for m in db.scalars(select(EmailMessage))}
    assert statuses == {lost: "sent", live: "queued"}


def test_a_forgotten_email_already_delivered_by_its_old_task_is_not_sent_twice(
    apply: Apply,
    db: Session,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    apply("clients.add", payloads.client("C1"))
    (message_id,) = publisher.message_ids
    age_email(db, message_id, timedelta(hours=3))
    publisher.sent.clear()
    relay(session_factory, publisher, min_age=NOW, sending_lease=LEASE, forgotten_after=FORGOTTEN)
    assert publisher.deliveries == [[message_id]]

    # Both the original task (held by a slow worker, not lost after all) and the new one run.
    transport = SmtpTransport(smtp.url)
    first = deliver_messages([message_id], session_factory, transport, "a@b.example", 3)
    second = deliver_messages([message_id], session_factory, transport, "a@b.example", 3)

    assert (first.sent, second.sent) == ([message_id], [])
    assert len(smtp.wait_for(1)) == 1
    assert len(smtp.messages) == 1
