"""List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) as a real SMTP server receives them
(services.mail.delivery over the in-process sink): on every email its recipient may turn off,
with a token naming that recipient and category; on no other."""

from __future__ import annotations

import payloads
import pytest
from conftest import Apply, Publisher
from opt_out_kit import SECRET, URL, ApplyWith, apply_with, policy, token_of
from smtp_sink import Received, SmtpSink

from models.contracts.unsubscribe_token import UnsubscribeClaims, verify_token
from services.db import SessionFactory
from services.mail.delivery import deliver_messages
from services.mail.transports import SmtpTransport
from services.opt_outs import OptOutPolicy

FROM = "Billing <billing@host.example>"
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def with_policy(session_factory: SessionFactory, publisher: Publisher) -> ApplyWith:
    return apply_with(session_factory, publisher)


def _deliver(publisher: Publisher, session_factory: SessionFactory, smtp: SmtpSink) -> None:
    report = deliver_messages(
        publisher.message_ids, session_factory, SmtpTransport(smtp.url), FROM, max_attempts=3
    )
    assert report.failed == [], report.last_error


def _by_recipient(received: list[Received]) -> dict[str, Received]:
    return {r.rcpt_tos[0]: r for r in received}


def _claims(received: Received) -> UnsubscribeClaims:
    message = received.message
    assert message["List-Unsubscribe-Post"] == ONE_CLICK
    return verify_token(token_of(str(message["List-Unsubscribe"])), SECRET, 0)


def _client_with_contacts(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "general", "invoice"))
    apply("contacts.add", payloads.contact("KB", "C1", "invoice"))
    apply("clients.set_billing_contact", payloads.event("C1", contact_id="KB"))


def test_each_recipient_gets_a_one_click_link_of_its_own(
    apply: Apply,
    with_policy: ApplyWith,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    _client_with_contacts(apply)
    with_policy(policy(), "notifications.send", payloads.notification("C1", "general"))
    _deliver(publisher, session_factory, smtp)

    received = _by_recipient(smtp.wait_for(2))
    assert sorted(received) == ["c1@example.com", "k1@example.com"]
    holder, contact = _claims(received["c1@example.com"]), _claims(received["k1@example.com"])
    assert (holder.kind, holder.client_id, holder.contact_id, holder.category) == (
        "holder", "C1", None, "general",
    )  # fmt: skip
    assert (contact.kind, contact.client_id, contact.contact_id, contact.category) == (
        "contact", "C1", "K1", "general",
    )  # fmt: skip
    value = str(received["c1@example.com"].message["List-Unsubscribe"])
    assert value.startswith("<https://billing.example.com/unsubscribe?token=")
    assert value.endswith(">")


def test_the_billing_contact_gets_no_link_on_invoice_mail_the_others_do(
    apply: Apply,
    with_policy: ApplyWith,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    """It receives invoices as the billing contact: unticking would not stop them."""
    _client_with_contacts(apply)
    apply("invoices.upsert", payloads.invoice("I1"))
    with_policy(policy(), "invoices.record_payment", payloads.payment("I1", "1215.59"))
    _deliver(publisher, session_factory, smtp)

    received = _by_recipient(smtp.wait_for(3))
    assert sorted(received) == ["c1@example.com", "k1@example.com", "kb@example.com"]
    assert received["kb@example.com"].message["List-Unsubscribe"] is None
    assert received["kb@example.com"].message["List-Unsubscribe-Post"] is None
    assert _claims(received["c1@example.com"]).category == "invoice"
    assert _claims(received["k1@example.com"]).contact_id == "K1"


@pytest.mark.parametrize(
    "opt_outs",
    [
        pytest.param(policy("general"), id="required-category"),
        pytest.param(policy(url=""), id="no-url-configured"),
        pytest.param(OptOutPolicy(), id="defaults"),
    ],
)
def test_no_header_where_there_is_nothing_to_opt_out_of(
    apply: Apply,
    with_policy: ApplyWith,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
    opt_outs: OptOutPolicy,
) -> None:
    _client_with_contacts(apply)
    with_policy(opt_outs, "notifications.send", payloads.notification("C1", "general"))
    _deliver(publisher, session_factory, smtp)

    for received in smtp.wait_for(2):
        assert received.message["List-Unsubscribe"] is None
        assert received.message["List-Unsubscribe-Post"] is None


def test_a_long_url_arrives_on_one_line_as_it_was_made(
    apply: Apply,
    with_policy: ApplyWith,
    publisher: Publisher,
    session_factory: SessionFactory,
    smtp: SmtpSink,
) -> None:
    """Folded, the URL would carry whitespace (compat32 folds after ';' and ',')."""
    template = URL.replace("/unsubscribe", "/a;b,c/" + "x" * 300 + "/unsubscribe")
    apply("clients.add", payloads.client("C1", send_welcome=False))
    with_policy(policy(url=template), "notifications.send", payloads.notification("C1"))
    _deliver(publisher, session_factory, smtp)

    (received,) = smtp.wait_for(1)
    (line,) = [
        line for line in received.data.splitlines() if line.startswith(b"List-Unsubscribe:")
    ]
    url = line.removeprefix(b"List-Unsubscribe: <").removesuffix(b">").decode()
    assert url.startswith(template.partition("{token}")[0])
    assert verify_token(token_of(url), SECRET, 0).client_id == "C1"
