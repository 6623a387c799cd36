"""Persistence (SQLAlchemy 2 tables) and the public event contracts (pydantic)."""

from models.base import Base
from models.billing import Invoice, InvoiceNotice, InvoiceStatus, Notice, Service, ServiceStatus
from models.clients import Client, ClientStatus, Contact
from models.dead_letters import DeadLetter
from models.emails import EmailMessage, EmailStatus
from models.ops import ScheduledRun, ScheduledRunChunk, TaskStat
from models.outbox import OutboxMessage
from models.records import AuditEvent, ProcessedEvent, RejectedEvent

__all__ = [
    "AuditEvent",
    "Base",
    "Client",
    "ClientStatus",
    "Contact",
    "DeadLetter",
    "EmailMessage",
    "EmailStatus",
    "Invoice",
    "InvoiceNotice",
    "InvoiceStatus",
    "Notice",
    "OutboxMessage",
    "ProcessedEvent",
    "RejectedEvent",
    "ScheduledRun",
    "ScheduledRunChunk",
    "Service",
    "ServiceStatus",
    "TaskStat",
]
