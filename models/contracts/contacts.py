"""Contact events: contacts.add, contacts.update, contacts.delete."""

from __future__ import annotations

from pydantic import model_validator

from models.contracts.common import (
    ENVELOPE_FIELDS,
    Address,
    Company,
    Country,
    Email,
    Event,
    Id,
    Name,
    Phone,
    Postcode,
    Short,
    refuse_nulls,
)

REQUIRED_CONTACT_FIELDS = frozenset({"firstname", "lastname", "email"})
CATEGORY_FIELDS = ("general", "product", "domain", "invoice", "support")


class AddContact(Event):
    contact_id: Id
    firstname: Name
    lastname: Name
    email: Email
    companyname: Company | None = None
    address1: Address | None = None
    address2: Address | None = None
    city: Short | None = None
    state: Short | None = None
    postcode: Postcode | None = None
    country: Country | None = None
    phonenumber: Phone | None = None
    general: bool = False
    product: bool = False
    domain: bool = False
    invoice: bool = False
    support: bool = False


class UpdateContact(Event):
    contact_id: Id
    firstname: Name | None = None
    lastname: Name | None = None
    email: Email | None = None
    companyname: Company | None = None
    address1: Address | None = None
    address2: Address | None = None
    city: Short | None = None
    state: Short | None = None
    postcode: Postcode | None = None
    country: Country | None = None
    phonenumber: Phone | None = None
    general: bool | None = None
    product: bool | None = None
    domain: bool | None = None
    invoice: bool | None = None
    support: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateContact:
        refuse_nulls(self, REQUIRED_CONTACT_FIELDS | frozenset(CATEGORY_FIELDS))
        if not self.changed_fields():
            raise ValueError("names no field to change")
        return self

    def changed_fields(self) -> dict[str, object]:
        envelope = ENVELOPE_FIELDS | {"contact_id"}
        return {name: getattr(self, name) for name in self.model_fields_set if name not in envelope}


class DeleteContact(Event):
    contact_id: Id
