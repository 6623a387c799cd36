"""services.upsert: the hosting services (products) upstream billing bills a client for."""

from __future__ import annotations

from models.billing import Service
from models.contracts import UpsertService
from services.actors import authorize
from services.audit import diff, record_change
from services.context import HandlerContext
from services.errors import Conflict

_FIELDS = ("product", "status", "amount", "currency", "billing_cycle", "next_due_date")


def upsert_service(ctx: HandlerContext, event: UpsertService) -> None:
    client = ctx.client(event.client_id)
    authorize(ctx.task_name, event, client)
    service = ctx.session.get(Service, event.service_id)
    if service is not None and service.client_id != client.id:
        raise Conflict(f"service {event.service_id!r} belongs to another client")
    after = {name: getattr(event, name) for name in _FIELDS}
    if service is None:
        service = Service(id=event.service_id, client_id=client.id, **after)
        ctx.session.add(service)
        changes: dict[str, object] = {"service_id": service.id, "created": after}
    else:
        before = {name: getattr(service, name) for name in _FIELDS}
        for name, value in after.items():
            setattr(service, name, value)
        changes = {"service_id": service.id, **diff(before, after)}
    record_change(ctx.session, ctx.task_name, event, changes)
