"""Contact rules: ownership, the default billing contact, deletion, client-area actions."""

from __future__ import annotations

import payloads
from conftest import Apply
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent, Client, Contact
from models.records import RejectedEvent
from services.dispatch import Outcome


def _client_with_contact(apply: Apply, *categories: str) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("contacts.add", payloads.contact("K1", "C1", *categories))


def test_add_contact_with_defaults(apply: Apply, db: Session) -> None:
    _client_with_contact(apply, "invoice")
    contact = db.get(Contact, "K1")
    assert contact is not None
    assert contact.client_id == "C1"
    flags = (contact.general, contact.product, contact.domain, contact.invoice, contact.support)
    assert flags == (False, False, False, True, False)


def test_contact_requires_name_and_email(apply: Apply) -> None:
    apply("clients.add", payloads.client("C1"))
    payload = payloads.contact("K1", "C1")
    del payload["lastname"], payload["email"]
    result = apply("contacts.add", payload)
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "invalid event: lastname: Field required; email: Field required"


def test_contact_for_unknown_client_refused(apply: Apply) -> None:
    result = apply("contacts.add", payloads.contact("K1", "NOPE"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == "unknown client 'NOPE'"


def test_contact_id_is_unique(apply: Apply) -> None:
    _client_with_contact(apply)
    apply("clients.add", payloads.client("C2", send_welcome=False))
    result = apply("contacts.add", payloads.contact("K1", "C2"))
    assert result.outcome is Outcome.REJECTED
    assert result.reason == (
        "contact id 'K1' is taken by another client: contact ids are unique across all "
        "clients, so this contact needs an id of its own"
    )
    again = apply("contacts.add", {**payloads.contact("K1", "C1"), "event_id": "k1-again"})
    assert again.reason == "contact 'K1' already exists"


def test_another_clients_contact_does_not_release_an_event_waiting_for_its_own(
    apply: Apply, db: Session
) -> None:
    # C2's update of its contact K1 overtakes C2's contacts.add; C1 then adds a K1 of its own.
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.add", payloads.client("C2", send_welcome=False))
    waiting = apply("contacts.update", {"event_id": "u1", "client_id": "C2", "contact_id": "K1",
                                        "firstname": "Later"})  # fmt: skip
    assert waiting.outcome is Outcome.REJECTED
    row = db.scalars(select(RejectedEvent).where(RejectedEvent.event_id == "u1")).one()
    assert row.waiting_for == "contact:C2/K1"
    apply("contacts.add", payloads.contact("K1", "C1"))
    db.expire_all()
    assert db.get(RejectedEvent, row.id).released_at is None  # type: ignore[union-attr]


def test_update_contact_flags(apply: Apply, db: Session) -> None:
    _client_with_contact(apply)
    apply("contacts.update", payloads.event("C1", contact_id="K1", support=True, city="York"))
    contact = db.get(Contact, "K1")
    assert contact is not None
    assert (contact.support, contact.city) == (True, "York")


def test_update_of_another_clients_contact_refused(apply: Apply, db: Session) -> None:
    _client_with_contact(apply)
    apply("clients.add", payloads.client("C2", send_welcome=False))

    result = apply("contacts.update", payloads.event("C2", contact_id="K1", general=True))

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "client 'C2' has no contact 'K1'"
    contact = db.get(Contact, "K1")
    assert contact is not None
    assert contact.general is False


def test_billing_contact_must_belong_to_the_client(apply: Apply, db: Session) -> None:
    _client_with_contact(apply)
    apply("clients.add", payloads.client("C2", send_welcome=False))

    result = apply("clients.set_billing_contact", payloads.event("C2", contact_id="K1"))

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "client 'C2' has no contact 'K1'"
    other = db.get(Client, "C2")
    assert other is not None
    assert other.billing_contact_id is None


def test_set_and_clear_billing_contact(apply: Apply, db: Session) -> None:
    _client_with_contact(apply)
    apply("clients.set_billing_contact", payloads.event("C1", contact_id="K1"))
    client = db.get(Client, "C1")
    assert client is not None
    assert client.billing_contact_id == "K1"

    apply("clients.set_billing_contact", payloads.event("C1", contact_id=None))
    db.refresh(client)
    assert client.billing_contact_id is None


def test_deleting_the_billing_contact_clears_it(apply: Apply, db: Session) -> None:
    _client_with_contact(apply, "invoice")
    apply("clients.set_billing_contact", payloads.event("C1", contact_id="K1"))

    assert apply("contacts.delete", payloads.event("C1", contact_id="K1")).outcome is (
        Outcome.APPLIED
    )

    client = db.get(Client, "C1")
    assert client is not None
    assert client.billing_contact_id is None
    assert db.get(Contact, "K1") is None
    audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "contacts.delete")).one()
    assert audit.changes == {
        "contact_id": "K1",
        "deleted": True,
        "billing_contact_id": ["K1", None],
    }


def test_client_actor_manages_own_contacts(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    me = payloads.client_actor("C1")

    added = apply("contacts.add", payloads.contact("K1", "C1", "general", actor=me))
    updated = apply("contacts.update", payloads.event("C1", contact_id="K1", domain=True, actor=me))
    deleted = apply("contacts.delete", payloads.event("C1", contact_id="K1", actor=me))

    assert [added.outcome, updated.outcome, deleted.outcome] == [Outcome.APPLIED] * 3
    assert db.get(Contact, "K1") is None


def test_client_actor_cannot_touch_another_clients_contacts(apply: Apply, db: Session) -> None:
    _client_with_contact(apply)
    apply("clients.add", payloads.client("C2", send_welcome=False))
    intruder = payloads.client_actor("C2")

    # Naming the victim's client id is refused by actor, naming its own by ownership.
    as_victim = apply("contacts.delete", payloads.event("C1", contact_id="K1", actor=intruder))
    as_self = apply("contacts.delete", payloads.event("C2", contact_id="K1", actor=intruder))
    add = apply("contacts.add", payloads.contact("K9", "C1", actor=intruder))

    assert [as_victim.outcome, as_self.outcome, add.outcome] == [Outcome.REJECTED] * 3
    assert db.get(Contact, "K1") is not None
    assert db.get(Contact, "K9") is None


def test_closed_client_cannot_manage_contacts(apply: Apply, db: Session) -> None:
    apply("clients.add", payloads.client("C1", send_welcome=False))
    apply("clients.set_status", payloads.event("C1", status="Closed"))

    result = apply("contacts.add", payloads.contact("K1", "C1", actor=payloads.client_actor("C1")))

    assert result.outcome is Outcome.REJECTED
    assert result.reason == "client C1 is Closed and cannot log in or act"
    assert db.get(Contact, "K1") is None
