"""recipients.unsubscribe in process, on both dialects: the token of an email's
List-Unsubscribe link turns that category off for that recipient, once, audited; a forged,
expired or required-category token, or one whose recipient is gone, is refused with its
reason, recorded like every refusal, and changes nothing."""

from __future__ import annotations

from typing import Any

import payloads
import pytest
from conftest import Apply, Publisher
from opt_out_kit import (
    NOW,
    ApplyWith,
    apply_with,
    audit_changes,
    policy,
    rejection_reasons,
    token_of,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Client, Contact, EmailMessage, RejectedEvent
from models.contracts.unsubscribe_token import UnsubscribeClaims, sign_token
from services.db import SessionFactory
from services.dispatch import Outcome
from services.opt_outs import OptOutPolicy

OPT_OUTS = policy()


@pytest.fixture
def with_policy(session_factory: SessionFactory, publisher: Publisher) -> ApplyWith:
    return apply_with(session_factory, publisher)


@pytest.fixture
def notified(apply: Apply, with_policy: ApplyWith, db: Session) -> dict[str, str]:
    """C1 (holder c1@) with contact K1 ticked general; a general notification sent to both:
    the token of each one's link, by address."""
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", "general", "support"))
    sent = payloads.notification("C1", "general")
    assert with_policy(OPT_OUTS, "notifications.send", sent).outcome == Outcome.APPLIED
    rows = db.scalars(select(EmailMessage).where(EmailMessage.event_id == sent["event_id"]))
    links = {row.to_address: row.list_unsubscribe for row in rows}
    assert set(links) == {"c1@example.com", "k1@example.com"}
    return {address: token_of(link) for address, link in links.items() if link}


def _recipients_of_next(with_policy: ApplyWith, db: Session, category: str) -> list[str]:
    sent = payloads.notification("C1", category)
    with_policy(OPT_OUTS, "notifications.send", sent)
    query = select(EmailMessage.to_address).where(EmailMessage.event_id == sent["event_id"])
    return sorted(db.scalars(query))


def _waiting_for(db: Session, event_id: str) -> str | None:
    query = select(RejectedEvent).where(RejectedEvent.event_id == event_id)
    return db.scalars(query).one().waiting_for


def _flags(db: Session) -> tuple[bool, bool, bool]:
    db.expire_all()
    client, contact = db.get(Client, "C1"), db.get(Contact, "K1")
    assert client is not None
    assert contact is not None
    return client.general_emails, contact.general, contact.support


def test_the_holders_token_turns_that_category_off_for_the_holder_only(
    notified: dict[str, str], with_policy: ApplyWith, db: Session
) -> None:
    event = payloads.unsubscribe(notified["c1@example.com"])
    result = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert result.outcome == Outcome.APPLIED
    assert _flags(db) == (False, True, True)
    assert _recipients_of_next(with_policy, db, "general") == ["k1@example.com"]
    assert _recipients_of_next(with_policy, db, "support") == ["c1@example.com", "k1@example.com"]
    assert audit_changes(db, "recipients.unsubscribe") == [
        {"recipient": "holder", "general_emails": [True, False]}
    ]


def test_a_contacts_token_unticks_that_contact_for_that_category(
    notified: dict[str, str], with_policy: ApplyWith, db: Session
) -> None:
    event = payloads.unsubscribe(notified["k1@example.com"])
    result = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert result.outcome == Outcome.APPLIED
    assert _flags(db) == (True, False, True)
    assert _recipients_of_next(with_policy, db, "general") == ["c1@example.com"]
    assert audit_changes(db, "recipients.unsubscribe") == [
        {"recipient": "contact", "contact_id": "K1", "general": [True, False]}
    ]


def test_the_same_event_twice_is_a_duplicate_and_a_second_click_changes_nothing(
    notified: dict[str, str], with_policy: ApplyWith, db: Session
) -> None:
    event = payloads.unsubscribe(notified["c1@example.com"])
    assert with_policy(OPT_OUTS, "recipients.unsubscribe", event).outcome == Outcome.APPLIED
    assert with_policy(OPT_OUTS, "recipients.unsubscribe", event).outcome == Outcome.DUPLICATE
    again = payloads.unsubscribe(notified["c1@example.com"])
    assert with_policy(OPT_OUTS, "recipients.unsubscribe", again).outcome == Outcome.APPLIED
    assert _flags(db) == (False, True, True)
    assert audit_changes(db, "recipients.unsubscribe") == [
        {"recipient": "holder", "general_emails": [True, False]},
        {"recipient": "holder"},  # the second click: recorded, nothing changed
    ]


def _forged(_token: str) -> str:
    """A token for the same holder, signed with another secret."""
    return sign_token(UnsubscribeClaims("holder", "C1", None, "general", int(NOW) * 2), b"x" * 32)


@pytest.mark.parametrize(
    ("make_token", "opt_outs", "reason"),
    [
        pytest.param(
            _forged, OPT_OUTS,
            "unsubscribe token's signature does not match: it was altered, forged, or signed "
            "with another secret",
            id="forged",
        ),
        pytest.param(
            lambda token: token, policy(now=NOW * 2),
            "unsubscribe token expired at ",
            id="expired",
        ),
        pytest.param(
            lambda token: token, policy("general"),
            "general emails are required by this business (CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES): "
            "they cannot be unsubscribed from",
            id="required",
        ),
        pytest.param(
            lambda token: token, OptOutPolicy(),
            "this worker has no CLIENTFLOW_UNSUBSCRIBE_SECRET, so it cannot check unsubscribe "
            "tokens",
            id="no-secret",
        ),
    ],
)  # fmt: skip
def test_a_token_that_cannot_be_taken_is_refused_with_its_reason_and_changes_nothing(
    notified: dict[str, str],
    with_policy: ApplyWith,
    db: Session,
    make_token: Any,
    opt_outs: OptOutPolicy,
    reason: str,
) -> None:
    event = payloads.unsubscribe(make_token(notified["c1@example.com"]))
    refused = with_policy(opt_outs, "recipients.unsubscribe", event)
    assert refused.outcome == Outcome.REJECTED
    assert refused.reason is not None
    assert refused.reason.startswith(reason)
    assert rejection_reasons(db, event["event_id"]) == [refused.reason]
    assert _flags(db) == (True, True, True)
    assert audit_changes(db, "recipients.unsubscribe") == []


def test_a_token_for_another_client_than_the_event_names_is_refused(
    notified: dict[str, str], apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    apply("clients.add", payloads.client("C2", send_welcome=False))
    event = payloads.unsubscribe(notified["c1@example.com"], client_id="C2")
    refused = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert refused.reason == "unsubscribe token is for client 'C1', not 'C2'"
    assert _flags(db) == (True, True, True)


def test_a_token_whose_contact_was_deleted_is_refused_and_does_not_wait(
    notified: dict[str, str], apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    apply("contacts.delete", payloads.event("C1", contact_id="K1"))
    event = payloads.unsubscribe(notified["k1@example.com"])
    refused = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert refused.reason == (
        "client 'C1' has no contact 'K1' any more: it was deleted after the email was sent, "
        "and gets no email to unsubscribe from"
    )
    assert _waiting_for(db, event["event_id"]) is None


def test_a_forged_token_for_a_client_that_does_not_exist_is_refused_not_held(
    with_policy: ApplyWith, db: Session
) -> None:
    token = sign_token(UnsubscribeClaims("holder", "C9", None, "general", 2 * int(NOW)), b"y" * 32)
    event = payloads.unsubscribe(token)
    refused = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert refused.reason is not None
    assert "signature does not match" in refused.reason
    assert _waiting_for(db, event["event_id"]) is None


def test_a_token_no_client_can_be_read_from_is_refused_by_the_contract(
    with_policy: ApplyWith, db: Session
) -> None:
    event = payloads.unsubscribe("not-a-token")
    refused = with_policy(OPT_OUTS, "recipients.unsubscribe", event)
    assert refused.reason == (
        "invalid event: payload: Value error, token is not an unsubscribe token clientflow "
        "issued (no client can be read from it), and no client_id was given"
    )
    assert rejection_reasons(db, event["event_id"]) == [refused.reason]


def test_a_client_actor_may_unsubscribe_on_its_own_client_only(
    notified: dict[str, str], apply: Apply, with_policy: ApplyWith, db: Session
) -> None:
    apply("clients.add", payloads.client("C2", send_welcome=False))
    token = notified["c1@example.com"]
    other = payloads.unsubscribe(token, actor=payloads.client_actor("C2"))
    assert with_policy(OPT_OUTS, "recipients.unsubscribe", other).reason == (
        "client C2 may not act on client C1's records"
    )
    own = payloads.unsubscribe(token, actor=payloads.client_actor("C1"))
    assert with_policy(OPT_OUTS, "recipients.unsubscribe", own).outcome == Outcome.APPLIED
    assert _flags(db)[0] is False

