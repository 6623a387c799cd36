"""Persistence (SQLAlchemy 2 tables) and the public event contracts (pydantic)."""

from models.base import Base
from models.clients import Client, ClientStatus, Contact
from models.emails import EmailMessage, EmailStatus
from models.records import AuditEvent, ProcessedEvent, RejectedEvent

__all__ = [
    "AuditEvent",
    "Base",
    "Client",
    "ClientStatus",
    "Contact",
    "EmailMessage",
    "EmailStatus",
    "ProcessedEvent",
    "RejectedEvent",
]
