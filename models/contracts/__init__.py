"""The public event contract: task name -> the pydantic model of its keyword arguments."""

from __future__ import annotations

from typing import Any

from models.contracts.billing import LineItem, RecordPayment, UpsertInvoice, UpsertService
from models.contracts.clients import (
    AddClient,
    CloseClient,
    SetBillingContact,
    SetClientStatus,
    UpdateClient,
)
from models.contracts.common import ENVELOPE_FIELDS, Actor, Category, Event
from models.contracts.contacts import AddContact, DeleteContact, UpdateContact
from models.contracts.notifications import SendNotification
from models.contracts.preferences import SetEmailPreferences, UnsubscribeRecipient
from models.contracts.version import CONTRACT_VERSION, newer_version_problem

EVENTS: dict[str, type[Event]] = {
    "clients.add": AddClient,
    "clients.update": UpdateClient,
    "clients.set_status": SetClientStatus,
    "clients.set_billing_contact": SetBillingContact,
    "clients.close": CloseClient,
    "clients.set_email_preferences": SetEmailPreferences,
    "contacts.add": AddContact,
    "contacts.update": UpdateContact,
    "contacts.delete": DeleteContact,
    "notifications.send": SendNotification,
    "recipients.unsubscribe": UnsubscribeRecipient,
    "services.upsert": UpsertService,
    "invoices.upsert": UpsertInvoice,
    "invoices.record_payment": RecordPayment,
}


def json_schemas() -> dict[str, Any]:
    """Every event's JSON Schema, keyed by task name (what `clientflow schema` prints)."""
    return {name: model.model_json_schema() for name, model in EVENTS.items()}


__all__ = [
    "CONTRACT_VERSION",
    "ENVELOPE_FIELDS",
    "EVENTS",
    "Actor",
    "AddClient",
    "AddContact",
    "Category",
    "CloseClient",
    "DeleteContact",
    "Event",
    "LineItem",
    "RecordPayment",
    "SendNotification",
    "SetBillingContact",
    "SetClientStatus",
    "SetEmailPreferences",
    "UnsubscribeRecipient",
    "UpdateClient",
    "UpdateContact",
    "UpsertInvoice",
    "UpsertService",
    "json_schemas",
    "newer_version_problem",
]
