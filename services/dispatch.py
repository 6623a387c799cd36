"""Applies one event: validate, check the inbox, run its handler, commit, then publish effects."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError

from models.company import CompanyLike
from models.contracts import (
    EVENTS,
    AddClient,
    AddContact,
    CloseClient,
    DeleteContact,
    Event,
    RecordPayment,
    SendNotification,
    SetBillingContact,
    SetClientStatus,
    SetEmailPreferences,
    UnsubscribeRecipient,
    UpdateClient,
    UpdateContact,
    UpsertInvoice,
    UpsertService,
    newer_version_problem,
)
from models.emails import EmailMessage
from models.records import ProcessedEvent
from services.clients import add_client, set_billing_contact, set_status, update_client
from services.closing import close_client
from services.contacts import add_contact, delete_contact, update_contact
from services.context import HandlerContext
from services.db import SessionFactory, UnitOfWork
from services.errors import Rejected, Transient, UnknownReference
from services.hosting import upsert_service
from services.inbox import claim_event
from services.invoices import record_payment, upsert_invoice
from services.mail.queue import DeliverNow, EmailQueue
from services.notifications import send_notification
from services.opt_outs import DEFAULT_OPT_OUTS, OptOutPolicy
from services.outbox import DELIVER_TASK, Publish, publish_staged
from services.preferences import set_email_preferences
from services.rejections import describe_validation_error, record_rejection
from services.unsubscribe import unsubscribe_recipient
from services.waiting import park

Handler = Callable[[HandlerContext, Any], None]

log = logging.getLogger(__name__)


# The rules of each event, by its contract. The event names live in one place only,
# models.contracts.EVENTS: the tasks are made from it (tasks/events.py), and this mapping must
# cover it (tests/test_event_registry.py).
HANDLERS: dict[type[Event], Handler] = {
    AddClient: add_client,
    UpdateClient: update_client,
    SetClientStatus: set_status,
    SetBillingContact: set_billing_contact,
    CloseClient: close_client,
    SetEmailPreferences: set_email_preferences,
    AddContact: add_contact,
    UpdateContact: update_contact,
    DeleteContact: delete_contact,
    SendNotification: send_notification,
    UnsubscribeRecipient: unsubscribe_recipient,
    UpsertService: upsert_service,
    UpsertInvoice: upsert_invoice,
    RecordPayment: record_payment,
}


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass
class Result:
    outcome: Outcome
    email_ids: list[str] = field(default_factory=list)
    reason: str | None = None


def parse_event(task_name: str, payload: dict[str, Any]) -> Event:
    model = EVENTS.get(task_name)
    if model is None:
        raise Rejected(f"unknown event {task_name!r}")
    # Checked before the contract: a newer event may carry fields this worker has never heard
    # of, and the reason to give is the version, not a list of "extra inputs" it explains.
    version_problem = newer_version_problem(payload.get("contract_version"))
    if version_problem is not None:
        raise Rejected(version_problem)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Rejected(describe_validation_error(exc)) from exc


def payload_digest(payload: dict[str, Any]) -> str:
    """The same for the same JSON object however its keys are ordered."""
    text = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr
    )
    return hashlib.sha256(text.encode()).hexdigest()


def process_event(
    task_name: str,
    payload: dict[str, Any],
    *,
    session_factory: SessionFactory,
    publish: Publish,
    company_name: CompanyLike,
    deliver_now: DeliverNow | None = None,
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS,
) -> Result:
    """Rejected events are recorded and returned; transient failures raise for a retry."""
    try:
        event = parse_event(task_name, payload)
        digest = payload_digest(payload)
        return _apply(
            task_name, event, digest, session_factory, publish, company_name, deliver_now,
            opt_outs,
        )  # fmt: skip
    except Rejected as exc:
        waiting_for = exc.waiting_for if isinstance(exc, UnknownReference) else None
        if (
            waiting_for is None
            or park(session_factory, task_name, payload, exc.reason, waiting_for) is None
        ):
            record_rejection(session_factory, task_name, payload, exc.reason)
        return Result(Outcome.REJECTED, reason=exc.reason)


def _seen_before(seen: ProcessedEvent, task_name: str, digest: str) -> Result:
    """A redelivery of the same event is a duplicate; another event under its id is refused."""
    if seen.task_name != task_name:
        raise Rejected(
            f"event id {seen.event_id!r} was already used by a {seen.task_name} event; "
            f"this {task_name} needs an event id of its own"
        )
    if seen.payload_sha256 is not None and seen.payload_sha256 != digest:
        raise Rejected(
            f"event id {seen.event_id!r} was already used by a {task_name} event with a "
            "different payload; a changed event needs an event id of its own"
        )
    return Result(Outcome.DUPLICATE)


def _apply(
    task_name: str,
    event: Event,
    digest: str,
    session_factory: SessionFactory,
    publish: Publish,
    company_name: CompanyLike,
    deliver_now: DeliverNow | None,
    opt_outs: OptOutPolicy,
) -> Result:
    args = (
        task_name, event, digest, session_factory, publish, company_name, deliver_now, opt_outs,
    )  # fmt: skip
    try:
        try:
            return _apply_once(*args, skip_logged_emails=False)
        except IntegrityError as exc:
            # Another worker committed a row with the same key (a contact's id; a new client
            # waits for it in its insert instead, services.clients) between our checks and our
            # commit (the same event waits on its inbox row instead); or
            # an event replayed after its inbox row was pruned (services/retention.py) owes
            # emails the log already has. Applied again at once: its checks now see the
            # committed rows (the specific refusal), and emails already logged are not queued
            # a second time.
            # Logged so ops (and the many-workers test) can see workers meet: the constraint
            # line only, as the driver's DETAIL line quotes the row's values (addresses).
            log.info(
                "event %s met a concurrent change (%s); applying it again",
                event.event_id,
                constraint_met(exc),
            )
            return _apply_once(*args, skip_logged_emails=True)
    except IntegrityError as exc:
        raise Transient(f"concurrent change while applying {event.event_id}") from exc
    except DataError as exc:
        # Valid by the contract, yet the database refuses a value: retrying cannot help.
        raise Rejected(f"cannot be stored: {exc.orig}") from exc


def constraint_met(exc: IntegrityError) -> str:
    """The driver's first line (which constraint), not its DETAIL line, which quotes the
    row's values (addresses)."""
    return str(exc.orig).partition("\n")[0]


def _apply_once(
    task_name: str,
    event: Event,
    digest: str,
    session_factory: SessionFactory,
    publish: Publish,
    company_name: CompanyLike,
    deliver_now: DeliverNow | None,
    opt_outs: OptOutPolicy,
    *,
    skip_logged_emails: bool,
) -> Result:
    with UnitOfWork(session_factory) as uow:
        if not claim_event(uow.session, event.event_id, task_name, digest):
            seen = uow.session.get(ProcessedEvent, event.event_id)
            if seen is None:  # pruned (services/retention.py) since the claim met it
                raise Transient(f"event {event.event_id} left the inbox while being checked")
            return _seen_before(seen, task_name, digest)
        emails = EmailQueue(
            uow.session, event.event_id, company_name, opt_outs, skip_logged=skip_logged_emails
        )
        ctx = HandlerContext(task_name, uow.session, emails)
        HANDLERS[type(event)](ctx, event)
        commit_with_effects(uow, [ctx], session_factory, publish, deliver_now)
    return Result(Outcome.APPLIED, email_ids=emails.ids)


def commit_with_effects(
    uow: UnitOfWork,
    handled: list[HandlerContext],
    session_factory: SessionFactory,
    publish: Publish,
    deliver_now: DeliverNow | None,
) -> None:
    """Commit what the handlers did; then publish what they staged and send their emails."""
    send_now = deliver_now is not None and deliver_now.ready()
    claimed: list[EmailMessage] = []
    for ctx in handled:
        if not ctx.emails.ids:
            continue
        if send_now:
            # Claimed for this process in the event's own commit: no outbox row, no
            # delivery task. Should this process die before sending, the claims' lease
            # runs out and the relay queues them again (services.outbox).
            claimed += ctx.emails.claim()
        else:
            # The outbox row and the emails commit together: the delivery is owed even
            # if the broker is away right after the commit.
            ctx.stage(DELIVER_TASK, {"message_ids": ctx.emails.ids})
    staged = [message_id for ctx in handled for message_id in ctx.staged]

    def effects() -> None:
        publish_staged(session_factory, staged, publish)
        if claimed and deliver_now is not None:
            deliver_now(claimed)

    uow.after_commit(effects)
    uow.commit()
