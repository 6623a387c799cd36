"""Planning a pass: its rows owed now split into keyset ranges, one chunk row per range."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from models.billing import Invoice, Service
from models.ops import ScheduledRunChunk
from services.invoice_run.chunks import PENDING
from services.invoice_run.generate import services_due
from services.invoice_run.notify import invoices_owed
from services.invoice_run.policy import RunPolicy
from services.invoice_run.ranges import IdRange, split_ids
from services.invoice_run.totals import GENERATE, NOTIFY, new_counts


def plan_pass(
    session: Session, run_id: int, phase: str, policy: RunPolicy, on: date
) -> list[ScheduledRunChunk]:
    """The pass's chunks, added to the session (flushed); none when nothing is owed."""
    ranges = _ranges(session, phase, policy, on)
    chunks = [
        ScheduledRunChunk(
            run_id=run_id,
            phase=phase,
            seq=seq,
            after_id=part.after,
            through_id=part.through,
            status=PENDING,
            counts=new_counts(),
        )
        for seq, part in enumerate(ranges, start=1)
    ]
    session.add_all(chunks)
    session.flush()
    return chunks


def _ranges(session: Session, phase: str, policy: RunPolicy, on: date) -> list[IdRange]:
    if phase == GENERATE:
        return split_ids(
            session, Service.id, services_due(on, policy.lead_days), policy.chunk_size
        )
    if phase == NOTIFY:
        return split_ids(
            session, Invoice.id, invoices_owed(on, policy.schedule), policy.chunk_size
        )
    raise ValueError(f"no such pass: {phase!r}")
