"""How big the tables that grow with traffic are, and how long retention keeps their rows.

PostgreSQL answers from its statistics (pg_class.reltuples, kept by autovacuum and ANALYZE;
pg_total_relation_size with indexes and TOAST), so a status on a table of millions of rows
costs nothing; SQLite (the embedded default, small by nature) counts exactly and has no size.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models.base import table_of
from models.dead_letters import DeadLetter
from models.emails import EmailMessage
from models.ops import ScheduledRunChunk
from models.records import AuditEvent, ProcessedEvent, RejectedEvent
from models.settings import Settings
from workers.ops.snapshot import TableSize

# The tables retention prunes (services/retention.py), and the dead letters ops empties. Of
# the runs, the chunks: a run is a row a day, its chunks hundreds (one per chunk-size ids).
GROWING = (
    ProcessedEvent, EmailMessage, RejectedEvent, AuditEvent, ScheduledRunChunk, DeadLetter,
)  # fmt: skip


def _kept(settings: Settings) -> dict[str, str]:
    def days(value: float, what: str = "") -> str:
        return "for ever" if not value else f"{value:g} days{what}"

    return {
        "processed_events": days(settings.processed_events_keep_days),
        "email_messages": days(settings.email_bodies_keep_days, " (bodies)"),
        "rejected_events": days(settings.rejected_events_keep_days),
        "audit_events": days(settings.audit_keep_days),
        "scheduled_run_chunks": days(settings.scheduled_runs_keep_days, " (finished runs)"),
        "dead_letters": "until purged",
    }


def table_sizes(session: Session, settings: Settings) -> list[TableSize]:
    kept = _kept(settings)
    postgres = session.get_bind().dialect.name == "postgresql"
    sizes = []
    for model in GROWING:
        table = table_of(model)
        if postgres:
            rows, size = session.execute(
                text(
                    "SELECT greatest(reltuples, 0)::bigint, pg_total_relation_size(oid) "
                    "FROM pg_class WHERE oid = to_regclass(:name)"
                ),
                {"name": table.name},
            ).one()
        else:
            rows, size = session.scalar(select(func.count()).select_from(table)), None
        sizes.append(TableSize(table=table.name, rows=rows or 0, bytes=size, kept=kept[table.name]))
    return sizes
