"""One-click unsubscribe end to end through a real worker: a notification arrives with its
List-Unsubscribe link, the link's token is published as recipients.unsubscribe (as the link's
handler would publish it: an event id and the token), and the next notification of that
category no longer reaches that recipient, while the others still get theirs."""

from __future__ import annotations

import payloads
import pytest
from opt_out_kit import token_of
from smtp_sink import Received, SmtpSink
from sqlalchemy import select
from worker_process import WorkerProcess, worker_fixture

from models.clients import Client
from models.emails import EmailMessage

pytestmark = pytest.mark.worker

URL = "https://billing.example.com/unsubscribe?token={token}"
worker = worker_fixture(
    extra_settings={"unsubscribe_url": URL, "unsubscribe_secret": "w" * 40},
)


def _of_event(messages: list[Received], event_id: str) -> dict[str, Received]:
    return {
        received.rcpt_tos[0]: received
        for received in messages
        if received.message["X-Clientflow-Event-Id"] == event_id
    }


def test_an_unsubscribed_holder_gets_no_more_of_that_category(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    setup = [
        ("clients.add", payloads.client("C1", send_welcome=False)),
        ("contacts.add", payloads.contact("K1", "C1", "general")),
    ]
    for name, payload in setup:
        worker.publish(name, payload)
    worker.wait_applied(*(payload["event_id"] for _, payload in setup))

    first = payloads.notification("C1", "general")
    worker.publish("notifications.send", first)
    received = _of_event(smtp.wait_for(2), first["event_id"])
    assert sorted(received) == ["c1@example.com", "k1@example.com"]
    holder = received["c1@example.com"].message
    assert holder["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(holder["List-Unsubscribe"])
    assert link.startswith("<https://billing.example.com/unsubscribe?token=")
    assert received["k1@example.com"].message["List-Unsubscribe"] != link  # its own token

    unsubscribe = payloads.unsubscribe(token_of(link))
    worker.publish("recipients.unsubscribe", unsubscribe)
    worker.wait_applied(unsubscribe["event_id"])
    with worker.sessions() as session:
        client = session.get(Client, "C1")
        assert client is not None
        assert client.general_emails is False

    second = payloads.notification("C1", "general")
    worker.publish("notifications.send", second)
    worker.wait_applied(second["event_id"])
    smtp.wait_for(3)
    worker.wait_no_email_owed()
    worker.wait_idle()

    assert sorted(_of_event(smtp.messages, second["event_id"])) == ["k1@example.com"]
    with worker.sessions() as session:
        logged = session.scalars(
            select(EmailMessage.to_address).where(EmailMessage.event_id == second["event_id"])
        ).all()
    assert logged == ["k1@example.com"]
    assert len(smtp.messages) == 3
