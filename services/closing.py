"""clients.close (WHMCS CloseClient): Closed, and its unpaid invoices and services cancelled."""

from __future__ import annotations

from sqlalchemy import select

from models.billing import Invoice, InvoiceStatus, Service, ServiceStatus
from models.clients import ClientStatus
from models.contracts import CloseClient
from services.actors import authorize
from services.audit import record_change
from services.context import HandlerContext

# Terminated is already final; Pending, Active and Suspended are what closing ends.
_OPEN_SERVICES = (ServiceStatus.PENDING, ServiceStatus.ACTIVE, ServiceStatus.SUSPENDED)


def close_client(ctx: HandlerContext, event: CloseClient) -> None:
    """All in the event's one transaction: a run never sees the client half closed, and
    cancelled invoices are outside every later notice pass."""
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    invoices = ctx.session.scalars(
        select(Invoice)
        .where(Invoice.client_id == client.id, Invoice.status == InvoiceStatus.UNPAID)
        .order_by(Invoice.id)
        .with_for_update()
    ).all()
    services = ctx.session.scalars(
        select(Service)
        .where(Service.client_id == client.id, Service.status.in_(_OPEN_SERVICES))
        .order_by(Service.id)
        .with_for_update()
    ).all()
    for invoice in invoices:
        invoice.status = InvoiceStatus.CANCELLED
    for service in services:
        service.status = ServiceStatus.CANCELLED
    record_change(
        ctx.session,
        ctx.task_name,
        event,
        {
            "status": [client.status, ClientStatus.CLOSED],
            "cancelled_invoices": [i.id for i in invoices],
            "cancelled_services": [s.id for s in services],
        },
    )
    client.status = ClientStatus.CLOSED
