"""Applies several events of one kind in one transaction, a few statements for all of them.

One event per transaction costs about a dozen round trips to PostgreSQL and the Python around
each; most of the CPU of a clients.add is there, not in its rules (bench/README.md). Events
that arrive together (a backlog: tasks/batching.py hands them over) are applied here with one
statement per table for the lot, then their emails sent over one connection.

Only the simple case is done together: every event valid, permitted, new, and independent of
the others in the batch. Any other event is left to be applied on its own (None in the result)
after this commit, by the same path as always, so its outcome and its reason are exactly what
they would have been: a duplicate, a refusal, a wait for its client, a retry. If anything goes
wrong while applying the batch, nothing of it is kept and every event is left to that path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from models.company import CompanyLike
from models.contracts import EVENTS, AddClient, Event, SendNotification
from services.clients import add_clients, check_new_client
from services.context import HandlerContext
from services.db import SessionFactory, UnitOfWork
from services.dispatch import (
    Outcome,
    Result,
    commit_with_effects,
    constraint_met,
    parse_event,
    payload_digest,
)
from services.errors import Rejected, Transient
from services.inbox import claim_events, unclaim_events
from services.mail.queue import DeliverNow, EmailQueue
from services.notifications import check_notification, send_notifications
from services.opt_outs import DEFAULT_OPT_OUTS, OptOutPolicy
from services.outbox import Publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Together:
    """How events of one kind are applied together."""

    # Refuses an event before the database is asked (as its handler would).
    check: Callable[[HandlerContext, Any], None]
    # Applies them, checked and claimed, in the session of their contexts; returns the ids
    # of the events it found it cannot apply (a new client's id taken, a notification's
    # client not there), which it left untouched for their own path to decide.
    apply: Callable[[Sequence[tuple[HandlerContext, Any]]], set[str]]
    # What no two events of one batch may share: the second would depend on the first.
    keys: Callable[[Any], tuple[str, ...]]


TOGETHER: dict[type[Event], Together] = {
    AddClient: Together(
        check=check_new_client,
        apply=add_clients,
        keys=lambda event: (f"id:{event.client_id}", f"email:{event.email.lower()}"),
    ),
    # Each sends on its own account: none depends on another, even for the same client.
    SendNotification: Together(
        check=check_notification,
        apply=send_notifications,
        keys=lambda event: (),
    ),
}

# What applying a batch may raise for reasons of one of its events (or of the database):
# the batch is then dropped and each event applied on its own. Anything else (a time limit,
# a bug) propagates.
_BATCH_ERRORS = (Rejected, Transient, SQLAlchemyError)


@dataclass(frozen=True)
class _Candidate:
    index: int
    event: Event
    digest: str


def process_batch(
    task_name: str,
    payloads: Sequence[dict[str, Any]],
    *,
    session_factory: SessionFactory,
    publish: Publish,
    company_name: CompanyLike,
    deliver_now: DeliverNow | None = None,
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS,
) -> list[Result | None]:
    """The result of each payload applied here, in order; None for one the caller must apply
    on its own (services.dispatch.process_event, through its task), after this returns."""
    results: list[Result | None] = [None] * len(payloads)
    model = EVENTS.get(task_name)
    together = TOGETHER.get(model) if model is not None else None
    if together is None:
        return results
    candidates = _candidates(task_name, together, payloads)
    if len(candidates) < 2:
        return results
    try:
        applied = _apply_together(
            task_name, together, candidates, session_factory, publish, company_name,
            deliver_now, opt_outs,
        )  # fmt: skip
    except _BATCH_ERRORS as exc:
        log.info(
            "%d %s events not applied together (%s); each is applied on its own",
            len(candidates),
            task_name,
            _why(exc),
        )
        return results
    for index, result in applied.items():
        results[index] = result
    return results


def _why(exc: Exception) -> str:
    """One line: a constraint met is another worker's concurrent change, as services.dispatch
    logs it."""
    if isinstance(exc, IntegrityError):
        return f"a concurrent change: {constraint_met(exc)}"
    first_line = str(exc).partition("\n")[0]
    return f"{type(exc).__name__}: {first_line}"


def _candidates(
    task_name: str, together: Together, payloads: Sequence[dict[str, Any]]
) -> list[_Candidate]:
    """The payloads that are valid events, none sharing a key with an earlier one (that one
    goes on its own, after: as it would have, in order)."""
    found: list[_Candidate] = []
    taken: set[str] = set()
    for index, payload in enumerate(payloads):
        try:
            event = parse_event(task_name, payload)
        except Rejected:
            continue
        keys = {f"event:{event.event_id}", *together.keys(event)}
        if keys & taken:
            continue
        taken |= keys
        found.append(_Candidate(index, event, payload_digest(payload)))
    return found


def _apply_together(
    task_name: str,
    together: Together,
    candidates: list[_Candidate],
    session_factory: SessionFactory,
    publish: Publish,
    company_name: CompanyLike,
    deliver_now: DeliverNow | None,
    opt_outs: OptOutPolicy,
) -> dict[int, Result]:
    with UnitOfWork(session_factory) as uow:
        session = uow.session
        checked: list[tuple[_Candidate, HandlerContext]] = []
        for candidate in candidates:
            emails = EmailQueue(session, candidate.event.event_id, company_name, opt_outs)
            ctx = HandlerContext(task_name, session, emails)
            try:
                together.check(ctx, candidate.event)
            except Rejected:
                continue  # refused on its own, with its reason recorded there
            checked.append((candidate, ctx))
        claimed = claim_events(
            session, task_name, {c.event.event_id: c.digest for c, _ in checked}
        ) if checked else set()  # fmt: skip
        chosen = [(c, ctx) for c, ctx in checked if c.event.event_id in claimed]
        if not chosen:
            return {}
        left_out = together.apply([(ctx, c.event) for c, ctx in chosen])
        if left_out:
            # Each goes on its own after this commit, and must find no inbox row of this
            # batch then: its claim is taken back in this transaction.
            unclaim_events(session, left_out)
            chosen = [(c, ctx) for c, ctx in chosen if c.event.event_id not in left_out]
        commit_with_effects(uow, [ctx for _, ctx in chosen], session_factory, publish, deliver_now)
    return {c.index: Result(Outcome.APPLIED, email_ids=ctx.emails.ids) for c, ctx in chosen}
