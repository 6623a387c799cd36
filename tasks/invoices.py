"""invoices.run, the scheduled invoice run beat starts, and invoices.run_chunk, the parts it is
split into (invoice events are in tasks/events.py)."""

from __future__ import annotations

from datetime import date
from functools import partial
from typing import Any

from celery import Task, shared_task
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from models.base import utcnow
from models.settings import get_settings
from services.db import SessionFactory
from services.invoice_run.chunk_work import run_chunk
from services.invoice_run.chunks import ChunkKey
from services.invoice_run.fan_in import finish_chunk
from services.invoice_run.handoff import CHUNK_TASK, Handoff, to_workers
from services.invoice_run.policy import RunPolicy
from services.invoice_run.run import start_run
from services.invoice_run.totals import PASSES
from tasks import runtime
from tasks.base import ClientflowTask, UnboundedTask
from tasks.emails import DeliveryUntil, deliver_after_commit
from tasks.failures import retry_or_bury
from tasks.policy import invoice_run_policy


# An ISO date ("2026-11-25"); anything else is buried with a reason, not failed silently.
class RunArguments(BaseModel):
    run_date: date


# Published by the run itself, but a message can be hand-published or corrupted: checked, so
# a malformed one is buried with a reason that says so.
class ChunkArguments(BaseModel):
    model_config = ConfigDict(strict=True)

    run_id: int
    phase: str
    seq: int

    @field_validator("phase")
    @classmethod
    def _a_pass(cls, value: str) -> str:
        if value not in PASSES:
            raise ValueError(f"must be one of the passes {', '.join(PASSES)}")
        return value


def _to_workers() -> Handoff:
    return to_workers(runtime.session_factory(), runtime.publish)


class ChunkTask(ClientflowTask):
    """A chunk killed at the hard time limit is recorded failed with the reason, as one that
    gives up by itself is (retry_or_bury's give_up), so its run ends `failed` when its last
    chunk ends, with exact counts, instead of being abandoned STALE_AFTER later."""

    def gave_up(self, kwargs: dict[str, Any], reason: str) -> None:
        try:
            key = ChunkKey(**ChunkArguments.model_validate(kwargs).model_dump())
        except ValidationError:
            return  # not a chunk's arguments: no chunk to record
        _give_up(runtime.session_factory(), key, invoice_run_policy(), _to_workers(), reason)


# Unbounded: planning a pass is one query over every row owed, however many there are. The
# chunks have the time limits of any task: at the soft limit a chunk is retried from its last
# committed batch; one killed at the hard limit is buried by the task base and recorded
# failed (ChunkTask), and goes on if the dead letter is replayed.
@shared_task(name="invoices.run", bind=True, base=UnboundedTask)
def run(self: Task[..., dict[str, Any]], run_date: str | None = None) -> dict[str, Any]:
    """Beat publishes it without a date (today, UTC); `clientflow invoices run` may pass one.

    It records the run and plans its first pass: the chunks are tasks of their own
    (invoices.run_chunk), on the invoice_run queue, which any worker takes. Safe to run
    twice, at once or after a crash: every notice is claimed by a unique row.
    """
    try:
        on = RunArguments(run_date=run_date).run_date if run_date is not None else utcnow().date()
    except ValidationError as exc:
        retry_or_bury(self, {"run_date": run_date}, exc)
    try:
        started = start_run(runtime.session_factory(), invoice_run_policy(), on, _to_workers())
    except Exception as exc:
        # Retried with the date fixed, so a run retried after midnight runs for its own day.
        retry_or_bury(self, {"run_date": on.isoformat()}, exc)
    return {"run_id": started.id, "status": started.status, "chunks": started.counts["chunks"]}


@shared_task(name=CHUNK_TASK, bind=True, base=ChunkTask)
def run_one_chunk(
    self: Task[..., dict[str, Any]], run_id: int, phase: str, seq: int
) -> dict[str, Any]:
    """One chunk of an invoice run. A failure is retried like any task's; a chunk that gives
    up, or is killed at the hard time limit, is recorded failed with the reason (and buried
    as a dead letter, to replay once the cause is fixed), and the run ends failed when its
    last chunk ends."""
    kwargs = {"run_id": run_id, "phase": phase, "seq": seq}
    try:
        key = ChunkKey(**ChunkArguments.model_validate(kwargs).model_dump())
    except ValidationError as exc:
        retry_or_bury(self, kwargs, exc)
    sessions, policy, handoff = runtime.session_factory(), invoice_run_policy(), _to_workers()
    # Each notice batch's emails are sent by this task after the batch's commit (no
    # delivery task per batch) for the first half of its soft time limit.
    deliver_now = (
        DeliveryUntil.within(deliver_after_commit, self.soft_time_limit)
        if get_settings().invoice_run_delivers
        else None
    )
    try:
        outcome = run_chunk(
            sessions, runtime.publish, policy, key, handoff, deliver_now=deliver_now
        )
    except Exception as exc:
        give_up = partial(_give_up, sessions, key, policy, handoff)
        retry_or_bury(self, kwargs, exc, give_up=give_up)
    return {"ran": outcome.ran, "closed_run": outcome.closed_run, "planned": outcome.planned}


def _give_up(
    sessions: SessionFactory, key: ChunkKey, policy: RunPolicy, handoff: Handoff, reason: str
) -> None:
    finish_chunk(sessions, key, policy, handoff, error=reason)
