"""End to end through a real worker: Redis broker, PostgreSQL, SMTP sink, JSON on the wire.

Each test starts from an empty PostgreSQL database, SMTP sink and Redis database; a test that
needs its worker not yet started gets a `celery worker` subprocess of its own, the others share
one, reset between them (see worker_process.py). Events are published exactly as
an upstream system would: send_task(name, kwargs=payload).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from email.utils import getaddresses
from typing import Any

import payloads
import pytest
from smtp_sink import Received, SmtpSink
from sqlalchemy import select
from worker_process import (
    BINDING_PREFIX,
    WorkerProcess,
    shared_smtp_fixture,
    shared_worker_fixture,
    wait_until,
    worker_fixture,
)

from models.clients import Contact
from models.emails import EmailMessage, EmailStatus
from models.outbox import OutboxMessage
from models.records import ProcessedEvent, RejectedEvent

pytestmark = pytest.mark.worker

# The tests that publish to a running worker share one, reset between them (a start and a
# stop cost about 5 s of each test); single_worker's one pool process makes it another.
worker = shared_worker_fixture()
stopped_worker = worker_fixture(name="stopped_worker", start=False)
# One pool process: the mail pause is each process' own.
single_worker = shared_worker_fixture(name="single_worker", concurrency=1)
smtp = shared_smtp_fixture()


def rcpts(messages: list[Received], event_id: str | None = None) -> Counter[str]:
    """How many messages each (lower-cased) envelope recipient got, for one event or all."""
    counts: Counter[str] = Counter()
    for received in messages:
        if event_id is None or received.message["X-Clientflow-Event-Id"] == event_id:
            counts.update(address.lower() for address in received.rcpt_tos)
    return counts


def add_client(worker: WorkerProcess, client_id: str = "C1", **fields: Any) -> dict[str, Any]:
    """Publish clients.add and wait until it is applied."""
    payload = payloads.client(client_id, **fields)
    worker.publish("clients.add", payload)
    worker.wait_applied(payload["event_id"])
    return payload


def settle(worker: WorkerProcess) -> None:
    """Wait until the worker has nothing left to do: no email owed, nothing in flight."""
    worker.wait_no_email_owed()
    worker.wait_idle()


def test_messages_are_json_on_the_wire_and_the_welcome_email_arrives(
    stopped_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = stopped_worker
    payload = payloads.client("C1", firstname="Zoë", notes="Line one\nLine two")
    worker.publish("clients.add", payload)

    raw = worker.redis.lrange("events", 0, -1)
    assert len(raw) == 1, raw
    envelope = json.loads(raw[0])
    assert envelope["content-type"] == "application/json"
    assert envelope["content-encoding"] == "utf-8"
    assert envelope["headers"]["task"] == "clients.add"
    assert envelope["properties"]["delivery_info"]["routing_key"] == "events"
    assert envelope["properties"]["body_encoding"] == "base64"
    body = base64.b64decode(envelope["body"]).decode("utf-8")
    args, kwargs, _embed = json.loads(body)
    assert args == []
    assert kwargs == payload

    worker.start()
    (received,) = smtp.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ["c1@example.com"]
    assert [address for _, address in getaddresses([str(message["To"])])] == ["c1@example.com"]
    assert str(message["Subject"]).startswith("Welcome to ")
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert message["X-Clientflow-Event-Id"] == payload["event_id"]
    assert message["X-Clientflow-Template"] == "client_signup"
    text = message.get_body(("plain",))
    assert text is not None
    assert "Dear Zoë Lovelace," in text.get_content()

    settle(worker)
    assert len(smtp.messages) == 1
    (row,) = worker.rows(EmailMessage)
    assert (row.status, row.attempts, row.to_address) == (EmailStatus.SENT, 1, "c1@example.com")


def test_notifications_route_by_category_and_stop_after_a_contact_is_deleted(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add_client(worker, "C1")
    contacts = [
        payloads.contact("KINV", "C1", "invoice"),
        payloads.contact("KGEN", "C1", "general"),
        payloads.contact("KNONE", "C1"),
        # The holder's own mailbox spelt differently: must not double the holder's email.
        payloads.contact("KSAME", "C1", "invoice", email="C1@Example.COM"),
    ]
    for contact in contacts:
        worker.publish("contacts.add", contact)
    worker.wait_applied(*(c["event_id"] for c in contacts))

    invoice = payloads.notification(
        "C1", "invoice", context={"title": "Invoice #42 is ready", "message": "Pay by Friday."}
    )
    worker.publish("notifications.send", invoice)
    smtp.wait_for(3)  # the welcome and two invoice emails
    settle(worker)

    assert rcpts(smtp.messages, invoice["event_id"]) == {
        "c1@example.com": 1,
        "kinv@example.com": 1,
    }
    assert len(smtp.messages) == 3
    for received in smtp.messages:
        if received.message["X-Clientflow-Event-Id"] == invoice["event_id"]:
            assert received.message["Subject"] == "Invoice #42 is ready"
            assert received.message.get_content_type() == "multipart/alternative"

    delete = payloads.event("C1", contact_id="KINV")
    worker.publish("contacts.delete", delete)
    worker.wait_applied(delete["event_id"])
    second = payloads.notification("C1", "invoice")
    worker.publish("notifications.send", second)
    smtp.wait_for(4)
    settle(worker)

    assert rcpts(smtp.messages, second["event_id"]) == {"c1@example.com": 1}
    assert rcpts(smtp.messages)["kinv@example.com"] == 1
    assert len(smtp.messages) == 4


def test_the_same_event_published_three_times_sends_each_email_once(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add_client(worker, "C1")
    contact = payloads.contact("K1", "C1", "general")
    worker.publish("contacts.add", contact)
    worker.wait_applied(contact["event_id"])

    notification = payloads.notification("C1", "general")
    for _ in range(3):
        worker.publish("notifications.send", notification)
    # Published after the copies, so its email arriving means the copies were taken first.
    sentinel = payloads.notification("C1", "general", context={"title": "Last", "message": "."})
    worker.publish("notifications.send", sentinel)
    smtp.wait_for(5)  # welcome, two for the notification, two for the sentinel
    settle(worker)

    expected = {"c1@example.com": 1, "k1@example.com": 1}
    assert rcpts(smtp.messages, notification["event_id"]) == expected
    assert rcpts(smtp.messages, sentinel["event_id"]) == expected
    assert len(smtp.messages) == 5
    keys = [m.message["X-Clientflow-Idempotency-Key"] for m in smtp.messages]
    assert len(set(keys)) == len(keys)
    with worker.sessions() as session:
        rows = session.scalars(
            select(EmailMessage).where(EmailMessage.event_id == notification["event_id"])
        ).all()
        assert sorted((r.to_address, r.status) for r in rows) == [
            ("c1@example.com", EmailStatus.SENT),
            ("k1@example.com", EmailStatus.SENT),
        ]
        assert session.scalars(select(RejectedEvent)).all() == []


def test_bad_events_are_rejected_with_reasons_and_good_ones_keep_flowing(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    pid = worker.pid
    pool = worker.pool_pids()
    add_client(worker, "C1")

    good: list[tuple[str, dict[str, Any]]] = []
    # event id -> (task, payload, words the reason must contain)
    bad: dict[str, tuple[str, dict[str, Any], list[str]]] = {}

    def publish_good(name: str, payload: dict[str, Any]) -> None:
        good.append((name, payload))
        worker.publish(name, payload)

    def publish_bad(name: str, payload: dict[str, Any], *words: str) -> None:
        bad[payload["event_id"]] = (name, payload, list(words))
        worker.publish(name, payload)

    # Wave 1: events that depend only on C1.
    publish_good("contacts.add", payloads.contact("K1", "C1", "general"))
    publish_bad(
        "contacts.add", payloads.contact("KB1", "C1", email="not-an-email"), "email", "valid"
    )
    publish_good("clients.add", payloads.client("C2"))
    publish_bad(
        "contacts.add",
        payloads.contact("KB2", "C1", firstname="Eve\r\nBcc: all@evil.example"),
        "firstname",
        "single line",
    )
    publish_bad("contacts.add", payloads.contact("KB3", "C404"), "unknown client", "C404")
    publish_good("clients.update", payloads.event("C1", companyname="Analytical Engines"))
    publish_bad(
        "contacts.add",
        payloads.contact("KB4", "C1", lastname="x" * 1_000_000),
        "lastname",
        "at most 100 characters",
    )
    missing = payloads.client("C3")
    del missing["city"]
    publish_bad("clients.add", missing, "city", "Field required")
    publish_bad(
        "contacts.add",
        payloads.contact("KB5", "C1", nickname="Charlie"),
        "nickname",
        "Extra inputs",
    )
    worker.app.send_task("contacts.add", args=[1, 2])
    publish_bad(
        "contacts.add", payloads.contact("KB6", "C1", firstname=123), "firstname", "valid string"
    )
    worker.wait_applied(*(p["event_id"] for _, p in good))

    # Wave 2: the notification needs K1 in place.
    publish_bad(
        "notifications.send",
        payloads.notification("C1", category="bogus"),
        "category",
        "Input should be",
    )
    notification = payloads.notification("C1", "general")
    publish_good("notifications.send", notification)
    publish_bad(
        "notifications.send",
        payloads.notification("C1", template="no_such_template"),
        "unknown email template",
    )
    publish_good("contacts.update", payloads.event("C1", contact_id="K1", product=True))
    worker.wait_applied(*(p["event_id"] for _, p in good))
    rejected = worker.wait_rejected(len(bad) + 1)
    smtp.wait_for(4)  # two welcomes, the notification to C1 and K1
    settle(worker)

    by_event = {row.event_id: row for row in rejected}
    assert set(by_event) == {*bad, None}
    for event_id, (name, _payload, words) in bad.items():
        row = by_event[event_id]
        assert row.task_name == name
        for word in words:
            assert word in row.reason, (event_id, row.reason)
    positional = by_event[None]
    assert positional.task_name == "contacts.add"
    assert "positional" in positional.reason
    assert json.loads(positional.payload) == {"args": [1, 2], "kwargs": {}}
    # The 1 MB field is neither echoed in the reason nor stored whole.
    huge = next(r for r in rejected if "KB4" in r.payload[:2000])
    assert len(huge.reason) < 500
    assert len(huge.payload) < 70_000

    with worker.sessions() as session:
        applied = set(session.scalars(select(ProcessedEvent.event_id)))
        assert {p["event_id"] for _, p in good} <= applied
        assert not applied & set(bad)
        contact_ids = set(session.scalars(select(Contact.id)))
        assert contact_ids == {"K1"}
        emails = session.scalars(select(EmailMessage)).all()
        assert {e.status for e in emails} == {EmailStatus.SENT}
    assert rcpts(smtp.messages) == {"c1@example.com": 2, "c2@example.com": 1, "k1@example.com": 1}
    assert rcpts(smtp.messages, notification["event_id"]) == {
        "c1@example.com": 1,
        "k1@example.com": 1,
    }
    assert len(smtp.messages) == 4

    # The worker never crashed: same main process, same pool children, no lost worker.
    assert worker.alive
    assert worker.pid == pid
    assert worker.pool_pids() == pool
    log = worker.log_text()
    assert "WorkerLostError" not in log
    assert "Traceback" not in log, worker.log_tail()


def test_a_closed_client_cannot_act_from_the_client_area(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add_client(worker, "C1")
    actor = payloads.client_actor("C1")
    before = payloads.contact("K1", "C1", actor=actor)
    worker.publish("contacts.add", before)
    worker.wait_applied(before["event_id"])

    close = payloads.event("C1", status="Closed", actor={"kind": "admin"})
    worker.publish("clients.set_status", close)
    worker.wait_applied(close["event_id"])

    refused = payloads.contact("K2", "C1", actor=actor)
    worker.publish("contacts.add", refused)
    (row,) = worker.wait_rejected(1)
    assert row.event_id == refused["event_id"]
    assert row.task_name == "contacts.add"
    assert "Closed" in row.reason

    # An admin still may.
    by_admin = payloads.contact("K3", "C1", actor={"kind": "admin"})
    worker.publish("contacts.add", by_admin)
    worker.wait_applied(by_admin["event_id"])
    settle(worker)
    assert {c.id for c in worker.rows(Contact)} == {"K1", "K3"}
    assert len(worker.rows(RejectedEvent)) == 1


def test_smtp_failures_are_retried_when_temporary_and_recorded_when_permanent(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    smtp.temp_fail_data = 2
    welcome = add_client(worker, "C1")
    (received,) = smtp.wait_for(1)
    assert received.rcpt_tos == ["c1@example.com"]
    settle(worker)
    assert smtp.temp_fail_data == 0
    assert len(smtp.messages) == 1
    (row,) = worker.rows(EmailMessage)
    assert row.event_id == welcome["event_id"]
    assert row.status == EmailStatus.SENT
    assert row.attempts == 3  # two 451s, then accepted
    assert row.last_error is None

    smtp.fail_rcpt["k1@example.com"] = "550 5.1.1 No such user"
    contacts = [payloads.contact("K1", "C1", "general"), payloads.contact("K2", "C1", "general")]
    for contact in contacts:
        worker.publish("contacts.add", contact)
    worker.wait_applied(*(c["event_id"] for c in contacts))
    notification = payloads.notification("C1", "general")
    worker.publish("notifications.send", notification)
    smtp.wait_for(3)
    settle(worker)

    assert rcpts(smtp.messages, notification["event_id"]) == {
        "c1@example.com": 1,
        "k2@example.com": 1,
    }
    with worker.sessions() as session:
        rows = {
            r.to_address: r
            for r in session.scalars(
                select(EmailMessage).where(EmailMessage.event_id == notification["event_id"])
            )
        }
    assert set(rows) == {"c1@example.com", "k1@example.com", "k2@example.com"}
    failed = rows["k1@example.com"]
    assert failed.status == EmailStatus.FAILED
    assert failed.last_error is not None
    assert "550" in failed.last_error
    assert failed.attempts == 1  # a permanent refusal is not retried
    assert rows["c1@example.com"].status == EmailStatus.SENT
    assert rows["k2@example.com"].status == EmailStatus.SENT


def test_an_event_the_database_cannot_store_is_rejected_not_lost(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add_client(worker, "C1")
    long_subject = payloads.notification("C1", context={"title": "x" * 2000, "message": "m"})
    nul = payloads.notification("C1", context={"title": "Hello", "message": "a\x00b"})
    worker.publish("notifications.send", long_subject)
    worker.publish("notifications.send", nul)
    after = payloads.notification("C1")
    worker.publish("notifications.send", after)
    worker.wait_applied(after["event_id"])
    settle(worker)

    refused = {row.event_id for row in worker.rows(RejectedEvent)}
    assert refused == {long_subject["event_id"], nul["event_id"]}


def test_an_unreachable_mail_server_pauses_sending_in_events_and_nothing_is_lost(
    single_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = single_worker
    smtp.stop()
    first = add_client(worker, "C1")
    # The event is applied; its welcome failed to connect, counts one attempt and waits for
    # the retry task. The worker stops sending inside events for a while.
    (row,) = worker.wait_for_db(
        lambda s: s.scalars(select(EmailMessage).where(EmailMessage.last_error.isnot(None))).all(),
        "the welcome's first attempt recorded",
    )
    assert (row.status, row.attempts) == (EmailStatus.QUEUED, 1)
    assert "Connection refused" in str(row.last_error)
    wait_until(lambda: "mail server unreachable" in worker.log_text(), "the pause logged")
    second = add_client(worker, "C2")
    smtp.start()
    smtp.wait_for(2)
    settle(worker)
    assert rcpts(smtp.messages) == {"c1@example.com": 1, "c2@example.com": 1}
    with worker.sessions() as session:
        rows = {r.event_id: r for r in session.scalars(select(EmailMessage))}
        published = session.scalars(select(OutboxMessage.kwargs)).all()
    assert {r.status for r in rows.values()} == {EmailStatus.SENT}
    # The second event, during the pause, went by a delivery task (its outbox row).
    assert published == [{"message_ids": [rows[second["event_id"]].id]}]
    assert rows[first["event_id"]].attempts >= 2


def test_a_reset_worker_starts_the_next_test_empty_and_keeps_running(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    """What the shared worker (shared_worker_fixture) relies on between two tests."""
    pid = worker.pid
    payload = add_client(worker)
    # Applied is committed before the welcome goes out, so wait for the sink, not the inbox.
    assert rcpts(smtp.wait_for(1)) == Counter({"c1@example.com": 1})

    worker.reset()

    with worker.sessions() as session:
        for table in (ProcessedEvent, EmailMessage, Contact, RejectedEvent, OutboxMessage):
            assert session.scalars(select(table)).first() is None, table.__name__
    assert [key for key in worker.redis.scan_iter() if not key.startswith(BINDING_PREFIX)] == []
    assert "clients.add" not in worker.log_text()  # what it logged before is the last test's
    # The same event again: the emptied inbox takes it as new, and the same process sends the
    # welcome again.
    worker.publish("clients.add", payload)
    worker.wait_applied(payload["event_id"])
    smtp.wait_for(2)
    assert worker.pid == pid
    assert "clients.add" in worker.log_text()
