"""clients.set_email_preferences and required categories, in process on both dialects: the
holder's flags, audited; routing that honours them; required categories that always reach the
holder and whose opt-out is refused, wherever it is asked."""

from __future__ import annotations

import payloads
import pytest
from conftest import Apply, Publisher
from invoice_helpers import run
from opt_out_kit import ApplyWith, apply_with, audit_changes, policy, rejection_reasons
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Client, EmailMessage
from services.db import SessionFactory
from services.dispatch import Outcome

CATEGORIES = ("general", "product", "domain", "invoice", "support")
REQUIRED_REASON = (
    "invoice emails are required by this business and always reach the account holder: they "
    "cannot be turned off (CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES)"
)


@pytest.fixture
def with_policy(session_factory: SessionFactory, publisher: Publisher) -> ApplyWith:
    return apply_with(session_factory, publisher)


def _recipients(db: Session, event_id: str) -> list[str]:
    rows = db.scalars(select(EmailMessage.to_address).where(EmailMessage.event_id == event_id))
    return sorted(rows)


def _holder_flags(db: Session) -> dict[str, bool]:
    db.expire_all()
    client = db.get(Client, "C1")
    assert client is not None
    return {category: client.holder_wants(category) for category in CATEGORIES}


def _client_with_contact(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", *CATEGORIES))


def test_a_new_client_and_an_existing_one_receive_every_category(
    apply: Apply, db: Session
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    assert _holder_flags(db) == dict.fromkeys(CATEGORIES, True)


def test_the_holder_opts_out_and_back_in_and_each_change_is_audited(
    apply: Apply, db: Session
) -> None:
    _client_with_contact(apply)
    first = apply(
        "clients.set_email_preferences", payloads.event("C1", general=False, support=False)
    )
    assert first.outcome == Outcome.APPLIED
    assert _holder_flags(db) == {**dict.fromkeys(CATEGORIES, True), "general": False,
                                 "support": False}  # fmt: skip
    apply("clients.set_email_preferences", payloads.event("C1", general=True, product=True))
    assert _holder_flags(db) == {**dict.fromkeys(CATEGORIES, True), "support": False}

    assert audit_changes(db, "clients.set_email_preferences") == [
        {"general_emails": [True, False], "support_emails": [True, False]},
        {"general_emails": [False, True]},  # product was on already: no change to record
    ]


def test_notifications_skip_the_holder_for_the_categories_it_turned_off(
    apply: Apply, db: Session
) -> None:
    _client_with_contact(apply)
    apply("clients.set_email_preferences", payloads.event("C1", product=False, invoice=False))
    sent = {category: payloads.notification("C1", category) for category in CATEGORIES}
    for payload in sent.values():
        assert apply("notifications.send", payload).outcome == Outcome.APPLIED

    for category, payload in sent.items():
        expected = ["k1@example.com"]
        if category not in ("product", "invoice"):
            expected.insert(0, "c1@example.com")
        assert _recipients(db, payload["event_id"]) == expected, category


def test_a_notification_nobody_is_left_to_receive_sends_nothing(
    apply: Apply, db: Session
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.set_email_preferences", payloads.event("C1", domain=False))
    result = apply("notifications.send", payloads.notification("C1", "domain"))
    assert (result.outcome, result.email_ids) == (Outcome.APPLIED, [])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "names no category to set; give any of general, product, domain, invoice, support"),
        ({"general": None}, "general cannot be null"),
        ({"general": "perhaps"}, "general: Input should be a valid boolean"),
        ({"billing": False}, "billing: Extra inputs are not permitted"),
    ],
)
def test_a_preferences_event_that_sets_nothing_or_nonsense_is_refused(
    apply: Apply, db: Session, fields: dict[str, object], reason: str
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    payload = payloads.event("C1", **fields)
    refused = apply("clients.set_email_preferences", payload)
    assert refused.reason is not None
    assert reason in refused.reason
    assert rejection_reasons(db, payload["event_id"]) == [refused.reason]


def test_a_client_actor_sets_its_own_preferences_only(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.add", payloads.client("C2", send_welcome=False))
    own = payloads.event("C1", general=False, actor=payloads.client_actor("C1"))
    assert apply("clients.set_email_preferences", own).outcome == Outcome.APPLIED
    other = payloads.event("C2", general=False, actor=payloads.client_actor("C1"))
    assert apply("clients.set_email_preferences", other).reason == (
        "client C1 may not act on client C2's records"
    )


def test_a_required_category_reaches_the_holder_who_had_turned_it_off(
    apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    """The holder turned invoice and support mail off; then the business required invoice."""
    _client_with_contact(apply)
    apply("clients.set_email_preferences", payloads.event("C1", invoice=False, support=False))
    required = policy("invoice")
    invoice = payloads.notification("C1", "invoice")
    support = payloads.notification("C1", "support")
    with_policy(required, "notifications.send", invoice)
    with_policy(required, "notifications.send", support)
    assert _recipients(db, invoice["event_id"]) == ["c1@example.com", "k1@example.com"]
    assert _recipients(db, support["event_id"]) == ["k1@example.com"]
    # The holder's own choice is kept: it applies again should invoice stop being required.
    assert _holder_flags(db)["invoice"] is False


def test_opting_the_holder_out_of_a_required_category_is_refused_as_a_whole(
    apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    _client_with_contact(apply)
    required = policy("invoice", "support")
    payload = payloads.event("C1", general=False, invoice=False, support=False)
    refused = with_policy(required, "clients.set_email_preferences", payload)
    assert refused.reason == (
        "invoice and support emails are required by this business and always reach the account "
        "holder: they cannot be turned off (CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES)"
    )
    assert rejection_reasons(db, payload["event_id"]) == [refused.reason]
    assert _holder_flags(db) == dict.fromkeys(CATEGORIES, True)  # general not applied either
    assert audit_changes(db, "clients.set_email_preferences") == []

    opt_in = payloads.event("C1", general=False, invoice=True)
    assert with_policy(required, "clients.set_email_preferences", opt_in).outcome == (
        Outcome.APPLIED
    )
    assert _holder_flags(db)["general"] is False


def test_invoice_emails_false_is_refused_while_invoice_is_required(
    apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    required = policy("invoice")
    add = payloads.client("C1", send_welcome=False, invoice_emails=False)
    assert with_policy(required, "clients.add", add).reason == REQUIRED_REASON
    assert db.get(Client, "C1") is None

    apply("clients.add", payloads.client("C1", send_welcome=False))
    update = payloads.event("C1", invoice_emails=False)
    assert with_policy(required, "clients.update", update).reason == REQUIRED_REASON
    assert _holder_flags(db)["invoice"] is True
    # Without the requirement, invoice_emails is the same flag as the invoice preference.
    assert apply("clients.update", update).outcome == Outcome.APPLIED
    assert _holder_flags(db)["invoice"] is False


def test_invoice_notices_honour_the_holders_flag_unless_invoice_is_required(
    apply: Apply, db: Session, session_factory: SessionFactory, publisher: Publisher
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.set_email_preferences", payloads.event("C1", invoice=False))
    apply("invoices.upsert", payloads.invoice("I1"))
    apply("invoices.upsert", payloads.invoice("I2", date="2026-03-02"))

    run(session_factory, publisher, "2026-03-01")
    assert _recipients(db, "invoice:I1:invoice_created") == []
    run(session_factory, publisher, "2026-03-02", opt_outs=policy("invoice"))
    assert _recipients(db, "invoice:I2:invoice_created") == ["c1@example.com"]


def test_the_payment_confirmation_follows_the_same_rule(
    apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.set_email_preferences", payloads.event("C1", invoice=False))
    for invoice_id in ("I1", "I2"):
        apply("invoices.upsert", payloads.invoice(invoice_id))
    apply("invoices.record_payment", payloads.payment("I1", "1215.59"))
    with_policy(policy("invoice"), "invoices.record_payment", payloads.payment("I2", "1215.59"))
    confirmations = "invoice:{}:payment_confirmation"
    assert _recipients(db, confirmations.format("I1")) == []
    assert _recipients(db, confirmations.format("I2")) == ["c1@example.com"]

