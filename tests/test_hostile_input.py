"""One bad or hostile upstream message never stalls, crashes or silences a real worker.

Each test reproduces a message that used to stop mail for everybody (published with send_task
as the README shows, or pushed raw into the Redis queue) and then checks the worker kept its
process, recorded the message with a reason, and that the good message behind it flowed.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import date
from typing import Any

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from wire import kombu_envelope, nested, task_headers
from worker_process import (
    UNACKED_KEY,
    WorkerProcess,
    shared_smtp_fixture,
    shared_worker_fixture,
    wait_until,
)

from models.billing import Invoice, InvoiceNotice
from models.clients import Client
from models.emails import EmailMessage, EmailStatus
from models.ops import ScheduledRun
from models.records import RejectedEvent
from services.dispatch import Outcome, process_event

pytestmark = pytest.mark.worker

# Every test here publishes to a running worker and looks at what it recorded: they share one
# worker process, reset between tests (a start and a stop cost about 4.4 s of each test).
worker = shared_worker_fixture()
watched_worker = shared_worker_fixture(
    name="watched_worker", extra_settings={"task_events": "true"}
)
smtp = shared_smtp_fixture()


def reason_for(worker: WorkerProcess, event_id: str) -> str:
    """Wait for the rejection of `event_id`; its reason."""

    def reasons(session: Session) -> list[str]:
        return list(
            session.scalars(select(RejectedEvent.reason).where(RejectedEvent.event_id == event_id))
        )

    return worker.wait_for_db(reasons, f"rejection of {event_id}")[0]


def good_event_flows(worker: WorkerProcess, smtp: SmtpSink, client_id: str) -> None:
    """A clients.add published after the bad ones is applied and its welcome arrives."""
    payload = payloads.client(client_id)
    worker.publish("clients.add", payload)
    worker.wait_applied(payload["event_id"])
    address = payload["email"]
    worker.wait_for_db(
        lambda s: s.scalars(
            select(EmailMessage).where(
                EmailMessage.to_address == address, EmailMessage.status == EmailStatus.SENT
            )
        ).first(),
        f"the welcome email to {address} sent",
    )
    assert any(address in m.rcpt_tos for m in smtp.messages)


def load(worker: WorkerProcess, task: str, payload: dict[str, Any]) -> None:
    """Apply an event straight to the worker's database (set-up; nothing is delivered)."""
    result = process_event(
        task, payload, session_factory=worker.sessions, publish=lambda *_: None,
        company_name="Test Hosting",
    )  # fmt: skip
    assert result.outcome is Outcome.APPLIED, result.reason


# --- 1. header-breaking values, and one unsendable message among good ones ---------------


def test_values_that_break_headers_are_refused_and_an_idn_address_gets_its_mail(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    pid = worker.pid
    idn = payloads.client("C1", email="billing@xn--bcher-kva.example")
    worker.publish("clients.add", idn)
    worker.wait_applied(idn["event_id"])

    subject = payloads.notification(
        "C1", context={"title": "Hello\u2028Bcc: x@example.org", "message": "Hi"}
    )
    number = payloads.invoice("E-1", number="INV\u20291")
    local = payloads.client("C2", email="İnx@example.org")
    for name, payload in [
        ("notifications.send", subject), ("invoices.upsert", number), ("clients.add", local),
    ]:  # fmt: skip
        worker.publish(name, payload)

    assert "line break or control character (U+2028)" in reason_for(worker, subject["event_id"])
    assert "number: Value error, must be a single line" in reason_for(worker, number["event_id"])
    assert "email: Value error, cannot be sent to" in reason_for(worker, local["event_id"])
    worker.wait_no_email_owed()
    with worker.sessions() as session:
        client = session.get(Client, "C1")
        assert client is not None
        assert client.email == "billing@xn--bcher-kva.example"
    # The welcome went out, addressed in the ASCII form the SMTP encoder accepts.
    assert any("billing@xn--bcher-kva.example" in m.rcpt_tos for m in smtp.messages)
    assert worker.pid == pid
    assert worker.alive


def test_a_message_that_cannot_be_composed_fails_alone_and_the_batch_goes_out(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    """Rows logged before the contract refused such values: one delivery task, five messages."""
    bad = {
        "subject": {"subject": "Hello\u2028Bcc: x@example.org"},
        "mailbox": {"to_address": "İnx@example.org"},
    }
    rows: dict[str, dict[str, str]] = {f"good-{n}": {} for n in range(3)} | bad
    with worker.sessions() as session:
        for key, fields in rows.items():
            session.add(email_row(key, **fields))
        session.commit()
    worker.publish("emails.deliver", {"message_ids": list(rows)})
    worker.wait_no_email_owed()
    worker.wait_idle()

    with worker.sessions() as session:
        status = {m.id: (m.status, m.last_error) for m in session.scalars(select(EmailMessage))}
    assert {k: s for k, (s, _) in status.items()} == {
        **{f"good-{n}": EmailStatus.SENT for n in range(3)},
        "subject": EmailStatus.FAILED,
        "mailbox": EmailStatus.FAILED,
    }
    for key in bad:
        assert (status[key][1] or "").startswith("cannot be composed, not retried: "), status[key]
    assert len(smtp.messages) == 3


def email_row(key: str, **fields: Any) -> EmailMessage:
    values: dict[str, Any] = {
        "id": key, "idempotency_key": uuid.uuid4().hex, "event_id": f"legacy-{key}",
        "client_id": "C1", "template": "general_announcement", "category": "general",
        "to_address": f"{key}@example.com", "to_name": "Ada Lovelace", "subject": "Hello",
        "body_text": "Hi", "body_html": "<p>Hi</p>", "status": EmailStatus.QUEUED, "attempts": 0,
    }  # fmt: skip
    values.update(fields)
    return EmailMessage(**values)


# --- 2 and 3. bodies that are not [args, kwargs, embed], and nesting that recursed ---------


@pytest.mark.parametrize(
    "body",
    [{"a": 1}, None, "hello", [1], [[], {}, {}, 4], [[], "kwargs", {}],
     [[], {}, {"chain": [{"task": "x"}]}]],
    ids=repr,
)  # fmt: skip
def test_a_task_message_whose_body_is_not_args_kwargs_embed_is_recorded_and_acknowledged(
    worker: WorkerProcess, smtp: SmtpSink, body: Any
) -> None:
    pid = worker.pid
    headers = task_headers("clients.add")
    worker.redis.lpush("events", kombu_envelope(json.dumps(body).encode(), headers))

    reason = reason_for(worker, headers["id"])
    if body == [[], {}, {"chain": [{"task": "x"}]}]:
        assert reason == "clientflow's tasks take no callbacks, chains or chords (embed has " \
            "['chain'])"  # fmt: skip
    else:
        assert reason == "body is not [args, kwargs, embed] (Celery message protocol 2)"
    with worker.sessions() as session:
        row = session.scalars(select(RejectedEvent)).one()
    assert row.task_name == "clients.add"
    assert json.loads(row.payload)["body"] == json.dumps(body)
    # Acknowledged: nothing holds the prefetch slot, the next event flows.
    good_event_flows(worker, smtp, "G1")
    worker.wait_idle()
    assert worker.redis.hlen(UNACKED_KEY) == 0
    assert worker.pid == pid
    assert worker.alive


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        # kombu took the KeyError of a missing id for a lost connection and looped on it.
        ({"id": None}, "header 'id' must be a non-empty string (the task id)"),
        ({"eta": "soon"}, "message is not a valid task message: invalid ETA value 'soon'"),
        # Read only when the task leaves for the pool: under load, outside any handler.
        ({"timelimit": [1, 2, 3]}, "header 'timelimit' must be [soft, hard] in seconds"),
        ({"timelimit": 5}, "header 'timelimit' must be [soft, hard] in seconds"),
        ({"retries": "many"}, "header 'retries' must be a whole number of at least 0"),
        ({"expires": [1, 2, 3]}, "message is not a valid task message: invalid expires value"),
    ],
    ids=repr,
)
def test_a_task_message_with_spoilt_celery_headers_is_recorded_and_acknowledged(
    worker: WorkerProcess, smtp: SmtpSink, spoil: dict[str, Any], why: str
) -> None:
    pid = worker.pid
    headers = {**task_headers("clients.add"), **spoil}
    headers = {k: v for k, v in headers.items() if v is not None}
    body = json.dumps([[], payloads.client("X1", event_id="spoilt"), {}]).encode()
    worker.redis.lpush("events", kombu_envelope(body, headers))

    assert reason_for(worker, "spoilt").startswith(why)
    good_event_flows(worker, smtp, "G1")
    worker.wait_idle()
    assert worker.redis.hlen(UNACKED_KEY) == 0
    assert worker.pid == pid
    assert "Connection to broker lost" not in worker.log_text()


def protocol_1_body(event: Any, **options: Any) -> dict[str, Any]:
    """A Celery protocol 1 body: the task, its id, its arguments and its options together
    (the headers are empty)."""
    return {"task": "clients.add", "id": str(uuid.uuid4()), "args": [], "kwargs": event,
            **options}  # fmt: skip


def immutable(task: str, **kwargs: Any) -> dict[str, Any]:
    """A Celery signature as JSON: the task runs after its parent, with these kwargs only."""
    return {"task": task, "args": [], "kwargs": kwargs, "options": {}, "subtask_type": None,
            "immutable": True}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "why"),
    [
        # Read when the task leaves for the pool: this stopped the worker ("Unrecoverable
        # error") until protocol 1 bodies got the checks protocol 2 headers get.
        ({"timelimit": ["x", "y"]}, "protocol 1 body field 'timelimit' must be [soft, hard]"),
        # A hard time limit of -5 s: the pool process running it was killed.
        ({"timelimit": [-5, None]}, "protocol 1 body field 'timelimit' must be [soft, hard]"),
        # Ran after the task: a second event nobody published.
        (
            {"callbacks": [immutable("clients.close", event_id="cb", client_id="X1")]},
            "clientflow's tasks take no callbacks, chains or chords (protocol 1 body has "
            "['callbacks'])",
        ),
        ({"kwargs": ["X1"]}, "protocol 1 body needs 'args' as a list and 'kwargs' as an object"),
    ],
    ids=repr,
)
def test_a_protocol_1_message_with_spoilt_options_is_recorded_and_the_next_one_runs(
    worker: WorkerProcess, smtp: SmtpSink, options: dict[str, Any], why: str
) -> None:
    pid = worker.pid
    body = protocol_1_body(payloads.client("X1", event_id="spoilt"), **options)
    worker.redis.lpush("events", kombu_envelope(json.dumps(body).encode(), {}))
    # Protocol 1 is accepted: a well-formed message behind the bad one is applied.
    good = payloads.client("G1")
    worker.redis.lpush("events", kombu_envelope(json.dumps(protocol_1_body(good)).encode(), {}))

    worker.wait_applied(good["event_id"])
    (row,) = worker.wait_rejected(1)
    assert row.reason.startswith(why), row.reason
    assert row.task_name == "clients.add"
    # Found under the event's id where the body has one, else under the task id.
    assert row.event_id == ("spoilt" if isinstance(body["kwargs"], dict) else body["id"])
    assert smtp.wait_for(1)[0].rcpt_tos == ["g1@example.com"]
    worker.wait_idle()
    assert worker.redis.hlen(UNACKED_KEY) == 0
    with worker.sessions() as session:
        assert session.get(Client, "X1") is None
    assert worker.pid == pid
    assert worker.alive
    assert "Unrecoverable error" not in worker.log_text()
    assert "exited with 'signal 9" not in worker.log_text()


def test_deep_nesting_is_refused_and_the_worker_keeps_going(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    pid = worker.pid
    add = payloads.client("C1")
    worker.publish("clients.add", add)
    worker.wait_applied(add["event_id"])
    # 900 levels: under the 16 KiB context limit, and what crash-looped the pool's pickling.
    deep = payloads.notification("C1", context={"title": "x", "message": "y", "d": nested(900)})
    worker.publish("notifications.send", deep)
    # 20 levels: within what the worker takes, beyond what the contract allows a context.
    moderate = payloads.notification(
        "C1", context={"title": "x", "message": "y", "d": nested(20)}
    )
    worker.publish("notifications.send", moderate)
    # 5,000 brackets in the queue: used to kill the worker while decoding, unrecorded.
    worker.redis.lpush("events", b"[" * 5000 + b"]" * 5000)
    # 5,000 levels inside a well-formed envelope: too deep for the body's JSON decoder.
    too_deep = task_headers("clients.add")
    body = b"[[]," + b"[" * 5000 + b"]" * 5000 + b",{}]"
    worker.redis.lpush("events", kombu_envelope(body, too_deep))

    assert reason_for(worker, deep["event_id"]) == "body nests 903 levels deep; the limit is 64"
    assert reason_for(worker, moderate["event_id"]) == (
        "invalid event: context: Value error, nests 21 levels deep; the limit is 16"
    )
    assert reason_for(worker, too_deep["id"]) == (
        "message body cannot be decoded (application/json): maximum recursion depth exceeded "
        "while decoding a JSON array from a unicode string"
    )
    entries = worker.wait_for_db(
        lambda s: s.scalars(
            select(RejectedEvent).where(RejectedEvent.task_name == "<not a message>")
        ).all(),
        "the bracket entry recorded",
    )
    assert "RecursionError" in entries[0].reason
    assert entries[0].payload.startswith('{"entry": "[[[[')
    good_event_flows(worker, smtp, "G1")
    assert worker.pid == pid
    assert worker.alive
    assert "Unrecoverable error" not in worker.log_text()


def test_an_entry_without_delivery_info_is_recorded_not_lost(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    headers = task_headers("clients.add")
    body = json.dumps([[], payloads.client("X1"), {}]).encode()
    entry = kombu_envelope(body, headers, properties={"delivery_tag": str(uuid.uuid4())})
    worker.redis.lpush("events", entry)
    rows = worker.wait_for_db(
        lambda s: s.scalars(select(RejectedEvent)).all(), "the entry recorded"
    )
    assert rows[0].task_name == "<not a message>"
    assert "delivery_info" in rows[0].reason
    good_event_flows(worker, smtp, "G1")
    worker.wait_idle()
    assert worker.redis.hlen(UNACKED_KEY) == 0


# --- 4. an invoice the run cannot handle ---------------------------------------------------


def test_one_invoice_the_run_cannot_handle_is_skipped_and_recorded_not_fatal(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    load(worker, "clients.add", payloads.client("C1", send_welcome=False))
    for invoice_id in ("A-1", "B-1", "C-1"):
        load(worker, "invoices.upsert", payloads.invoice(invoice_id))
    far = payloads.invoice("E-9", due_date="9999-12-31")
    worker.publish("invoices.upsert", far)
    assert "due_date: Value error, must be between 1970-01-01 and 2199-12-31" in reason_for(
        worker, far["event_id"]
    )
    # An invoice stored before dates were bounded, between the others in id order.
    with worker.sessions() as session:
        stored = session.get(Invoice, "B-1")
        assert stored is not None
        stored.due_date = date(9999, 12, 31)
        session.commit()

    worker.app.send_task("invoices.run", kwargs={"run_date": "2026-03-02"})
    [run] = worker.wait_for_db(
        lambda s: s.scalars(
            select(ScheduledRun).where(ScheduledRun.finished_at.is_not(None))
        ).all(),
        "the run finished",
    )
    assert run.status == "succeeded", run.error
    assert run.counts["unhandled"] == 1
    assert run.counts["problems"] == [
        "invoice 'B-1': OverflowError: date value out of range"
    ]
    sent = worker.wait_for_db(
        lambda s: [
            m.to_address for m in s.scalars(select(EmailMessage))
            if m.status == EmailStatus.SENT
        ][1:],
        "both notices sent",
    )  # fmt: skip
    worker.wait_idle()
    with worker.sessions() as session:
        noticed = set(session.scalars(select(InvoiceNotice.invoice_id)))
    assert noticed == {"A-1", "C-1"}
    assert sent == ["c1@example.com"]  # the second of two
    assert len(smtp.messages) == 2


# --- 5, 6 and 7. keys, ids and payments that contradicted each other ---------------------


def confirmation_context() -> dict[str, Any]:
    money = "10.00"
    return {
        "invoice": {
            "number": "E-4", "date": "2026-03-01", "due_date": "2026-03-15", "items": [],
            "currency": "GBP",
            "subtotal": money, "tax": money, "total": money, "paid": money, "balance": money,
        },
        "invoiced_to": {"name": "Ada", "companyname": None, "address_lines": [], "email": "-"},
        "payment": {"amount": money, "date": "2026-03-10", "transaction_id": None},
    }  # fmt: skip


def test_publisher_ids_cannot_reach_the_systems_own_keys_ids_or_payments(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    add = payloads.client("C1", send_welcome=False)
    worker.publish("clients.add", add)
    worker.wait_applied(add["event_id"])
    # An event spelt like the key of the Payment Confirmation the run owes for E-4.
    lookalike = payloads.notification(
        "C1", "invoice", event_id="invoice:E-4:payment_confirmation",
        template="invoice_payment_confirmation", context=confirmation_context(),
    )  # fmt: skip
    worker.publish("notifications.send", lookalike)
    worker.wait_applied(lookalike["event_id"])

    invoice = payloads.invoice("E-4")
    worker.publish("invoices.upsert", invoice)
    worker.wait_applied(invoice["event_id"])
    half = payloads.payment("E-4", "600.00", transaction_id="T-1")
    again = payloads.payment("E-4", "600.00", transaction_id="T-1")
    worker.publish("invoices.record_payment", half)
    worker.wait_applied(half["event_id"])
    worker.publish("invoices.record_payment", again)
    assert reason_for(worker, again["event_id"]) == (
        "transaction 'T-1' was already applied to invoice 'E-4' "
        f"(event {half['event_id']!r}); a transaction is applied once"
    )
    # Upstream, not knowing of the payment, sends the invoice again: the payment stays.
    stale = {**invoice, "event_id": payloads.event_id()}
    worker.publish("invoices.upsert", stale)
    worker.wait_applied(stale["event_id"])
    rest = payloads.payment("E-4", "615.59", transaction_id="T-2")
    worker.publish("invoices.record_payment", rest)
    worker.wait_applied(rest["event_id"])

    pre_empt = payloads.invoice("auto:SX:20261204")
    zero = payloads.invoice("Z-1", balance="0.00")
    reused = {"event_id": add["event_id"], "client_id": "C1", "firstname": "Augusta"}
    worker.publish("invoices.upsert", pre_empt)
    worker.publish("invoices.upsert", zero)
    worker.publish("clients.update", reused)
    assert "invoice ids starting with 'auto:' are the ones clientflow generates" in reason_for(
        worker, pre_empt["event_id"]
    )
    assert "an Unpaid invoice must have a balance above 0; send it as Paid" in reason_for(
        worker, zero["event_id"]
    )
    assert reason_for(worker, add["event_id"]) == (
        f"event id {add['event_id']!r} was already used by a clients.add event; "
        "this clients.update needs an event id of its own"
    )

    worker.wait_no_email_owed()
    with worker.sessions() as session:
        paid = session.get(Invoice, "E-4")
        assert paid is not None
        assert (paid.status, str(paid.balance)) == ("Paid", "0.00")
        confirmations = session.scalars(
            select(EmailMessage).where(EmailMessage.template == "invoice_payment_confirmation")
        ).all()
    # The lookalike's email and the real confirmation: two emails, both sent.
    assert sorted(m.event_id for m in confirmations) == [
        "invoice:E-4:payment_confirmation"
    ] * 2
    assert {m.status for m in confirmations} == {EmailStatus.SENT}


# --- 8. the smaller ones -------------------------------------------------------------------


def test_over_long_ids_and_client_set_notes_are_refused_with_reasons(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    long_id = "e" * 129
    worker.publish("clients.add", payloads.client("C1", event_id=long_id))
    notes = payloads.event("C1", actor=payloads.client_actor("C1"), notes="VIP")
    worker.publish("clients.update", notes)
    reason = reason_for(worker, notes["event_id"])
    assert reason.endswith("notes are for admins only; a client actor may not set them")
    # Two pool processes: the long id's refusal may be recorded after the other one.
    [row] = worker.wait_for_db(
        lambda s: s.scalars(
            select(RejectedEvent).where(RejectedEvent.task_name == "clients.add")
        ).all(),
        "the clients.add with a 129-character event id refused",
    )
    assert row.reason == "invalid event: event_id: String should have at most 128 characters"
    assert row.event_id is not None
    assert len(row.event_id) <= 128
    good_event_flows(worker, smtp, "G1")


# --- personal data: task events and the worker's own log lines carry ids -----------------


def test_task_events_and_the_workers_refusals_carry_ids_not_personal_data(
    watched_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = watched_worker
    secret = "grace.hopper.secret@example.org"
    received: list[dict[str, Any]] = []
    with worker.app.connection_for_read() as connection:
        receiver = worker.app.events.Receiver(
            connection, handlers={"task-received": received.append}
        )
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        listening.start()
        try:
            # Redis fans events out only to subscribers already listening: wait until a probe
            # of our own comes back before publishing anything the test reads.
            with worker.app.events.default_dispatcher() as dispatcher:
                wait_until(
                    lambda: dispatcher.send("task-received", name="probe")
                    or any(e.get("name") == "probe" for e in received),
                    "the event receiver to be listening",
                    interval=0.2,
                )
            # The contact overtakes its client: the client's add releases it, and clientflow
            # publishes it again itself (runtime.publish), names and address in its kwargs.
            contact = payloads.contact("K1", "C1", email=secret, firstname="Grace")
            worker.publish("contacts.add", contact)
            reason_for(worker, contact["event_id"])
            add = payloads.client("C1", send_welcome=False)
            worker.publish("clients.add", add)
            worker.wait_applied(add["event_id"], contact["event_id"])
            # Refused before any task ran: an unknown task, and a body of the wrong shape.
            worker.app.send_task("bogus.task", kwargs={"event_id": "u1", "email": secret})
            headers = task_headers("clients.add")
            worker.redis.lpush("events", kombu_envelope(json.dumps({"e": secret}).encode(),
                                                        headers))  # fmt: skip
            worker.wait_rejected(2 + 1)
            worker.wait_idle()
            wait_until(
                lambda: len([e for e in received if e.get("name") == "contacts.add"]) >= 2,
                "both contacts.add task-received events",
            )
        finally:
            receiver.should_stop = True
            listening.join(timeout=10)

    released = [e for e in received if e.get("name") == "contacts.add"]
    assert len(released) == 2  # as published upstream, then as clientflow re-published it
    ours = released[-1]
    assert ours["kwargs"] == f"{{event_id={contact['event_id']!r}, client_id='C1', " \
        "contact_id='K1', +3 fields}"  # fmt: skip
    log = worker.log_text()
    assert "refused message task='bogus.task'" in log
    assert "refused message task='clients.add'" in log
    assert secret not in log


def test_a_context_of_the_wrong_shape_and_another_clients_contact_id_are_reasons(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    for client_id in ("C1", "C2"):
        add = payloads.client(client_id, send_welcome=False)
        worker.publish("clients.add", add)
        worker.wait_applied(add["event_id"])
    # The shipped invoice template loops over invoice["items"]: here a number.
    context = confirmation_context()
    context["invoice"]["items"] = 5
    shape = payloads.notification("C1", "invoice", template="invoice_created", context=context)
    worker.publish("notifications.send", shape)
    assert reason_for(worker, shape["event_id"]) == (
        "template 'invoice_created' cannot render with this context: TypeError: 'int' object "
        "is not iterable"
    )
    # C2's update of its contact K1 overtakes its add; C1 takes the id K1 meanwhile.
    early = payloads.event("C2", contact_id="K1", firstname="Later")
    worker.publish("contacts.update", early)
    reason_for(worker, early["event_id"])  # waiting for contact:C2/K1
    mine = payloads.contact("K1", "C1")
    worker.publish("contacts.add", mine)
    worker.wait_applied(mine["event_id"])
    theirs = payloads.contact("K1", "C2")
    worker.publish("contacts.add", theirs)
    assert reason_for(worker, theirs["event_id"]).startswith(
        "contact id 'K1' is taken by another client"
    )
    worker.wait_idle()
    with worker.sessions() as session:
        waiting = session.scalars(
            select(RejectedEvent).where(RejectedEvent.event_id == early["event_id"])
        ).one()
    assert (waiting.waiting_for, waiting.released_at) == ("contact:C2/K1", None)
    good_event_flows(worker, smtp, "G1")
