"""What a run is told by its settings: lead time, notice days, batch and chunk sizes, and what
recipients may opt out of."""

from __future__ import annotations

from dataclasses import dataclass

from models.company import CompanyLike
from services.invoice_run.schedule import NoticeSchedule
from services.opt_outs import DEFAULT_OPT_OUTS, OptOutPolicy


@dataclass(frozen=True)
class RunPolicy:
    lead_days: int
    schedule: NoticeSchedule
    batch_size: int  # rows per transaction
    company_name: CompanyLike
    # Rows per chunk, the part of a pass one task takes (paged in batches). Small enough
    # that the workers share a pass evenly; large enough that a run is not mostly the cost
    # of its chunk tasks (each end locks and writes the run's row, fan_in.py, so the ends
    # take turns).
    chunk_size: int
    opt_outs: OptOutPolicy = DEFAULT_OPT_OUTS
