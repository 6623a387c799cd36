"""Client events: add, update, set_status, set_billing_contact, and close (which cancels)."""

from __future__ import annotations

from pydantic import Field, model_validator

from models.clients import ClientStatus
from models.contracts.common import (
    ENVELOPE_FIELDS,
    Address,
    Company,
    Country,
    Email,
    Event,
    Id,
    Language,
    Name,
    Notes,
    Phone,
    Postcode,
    Short,
    TaxId,
    refuse_nulls,
)

# What WHMCS requires when an admin adds a client; an update may leave them out, not null them.
REQUIRED_CLIENT_FIELDS = frozenset(
    {
        "firstname",
        "lastname",
        "email",
        "address1",
        "city",
        "state",
        "postcode",
        "country",
        "phonenumber",
    }
)


class AddClient(Event):
    firstname: Name
    lastname: Name
    companyname: Company | None = None
    email: Email
    address1: Address
    address2: Address | None = None
    city: Short
    state: Short
    postcode: Postcode
    country: Country
    phonenumber: Phone
    tax_id: TaxId | None = None
    language: Language | None = None
    notes: Notes | None = None
    status: ClientStatus = ClientStatus.ACTIVE
    send_welcome: bool = Field(default=True, description="Send the Client Signup email.")
    invoice_emails: bool = Field(
        default=True, description="The holder receives invoice mail (false: only contacts do)."
    )


class UpdateClient(Event):
    """Only the fields present are changed; status has its own event (clients.set_status)."""

    firstname: Name | None = None
    lastname: Name | None = None
    companyname: Company | None = None
    email: Email | None = None
    address1: Address | None = None
    address2: Address | None = None
    city: Short | None = None
    state: Short | None = None
    postcode: Postcode | None = None
    country: Country | None = None
    phonenumber: Phone | None = None
    tax_id: TaxId | None = None
    language: Language | None = None
    notes: Notes | None = None
    invoice_emails: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateClient:
        refuse_nulls(self, REQUIRED_CLIENT_FIELDS | {"invoice_emails"})
        if not self.changed_fields():
            raise ValueError("names no field to change")
        if self.actor.kind == "client" and "notes" in self.model_fields_set:
            # WHMCS keeps notes for staff: a client editing its profile never sees them.
            raise ValueError("notes are for admins only; a client actor may not set them")
        return self

    def changed_fields(self) -> dict[str, object]:
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name not in ENVELOPE_FIELDS
        }


class SetClientStatus(Event):
    status: ClientStatus


class SetBillingContact(Event):
    contact_id: Id | None = Field(description="A contact of this client, or null to clear.")


class CloseClient(Event):
    """WHMCS CloseClient: status Closed, and its unpaid invoices and its services cancelled."""
