"""A run's counts added to as each chunk ends, not summed from every chunk again; finished runs
prunable by retention.

- scheduled_run_chunks.unfolded: what a chunk's batches added to its counts that its run's
  counts do not have yet (services/invoice_run/fan_in.py moves it into the run at the chunk's
  end). An open run at the upgrade is put in that state: its ended chunks' counts summed into
  its counts, each pending chunk's counts still to add.
- ix_invoice_notices_run_id: retention detaches a pruned run's notices (they stay: they keep
  each notice exactly-once) by run, and deleting a run checks that no notice names it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = ("running", "abandoned")
# As services/invoice_run/totals.py adds counts up (copied: a migration must not change when
# the code does): the larger of queries_per_batch, the last 20 problems, the sum of the rest.
MOST = ("queries_per_batch",)
MAX_PROBLEMS_KEPT = 20


def upgrade() -> None:
    with op.batch_alter_table("scheduled_run_chunks") as batch:
        batch.add_column(
            sa.Column("unfolded", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    op.create_index(op.f("ix_invoice_notices_run_id"), "invoice_notices", ["run_id"])
    _refold_open_runs(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_invoice_notices_run_id"), table_name="invoice_notices")
    with op.batch_alter_table("scheduled_run_chunks") as batch:
        batch.drop_column("unfolded")


def _refold_open_runs(connection: sa.Connection) -> None:
    """The code before this summed every chunk, pending ones included, into its run at each
    chunk end; from here a run has the counts of its ended chunks, and a pending chunk adds
    its own when it ends."""
    runs = connection.execute(
        sa.text("SELECT id, counts FROM scheduled_runs WHERE status IN ('running', 'abandoned')")
    ).all()
    for run_id, run_counts in runs:
        chunks = connection.execute(
            sa.text(
                "SELECT phase, seq, status, counts FROM scheduled_run_chunks WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()
        if not chunks:
            continue
        counts = _zeroed(_loaded(run_counts))
        tally = {"planned": len(chunks), "done": 0, "failed": 0}
        for phase, seq, status, chunk_counts in chunks:
            if status == "pending":
                connection.execute(
                    sa.text(
                        "UPDATE scheduled_run_chunks SET unfolded = counts "
                        "WHERE run_id = :r AND phase = :p AND seq = :s"
                    ),
                    {"r": run_id, "p": phase, "s": seq},
                )
                continue
            tally[status] = tally.get(status, 0) + 1
            counts = _added(counts, _loaded(chunk_counts))
        counts["chunks"] = tally
        connection.execute(
            sa.text("UPDATE scheduled_runs SET counts = :c WHERE id = :r"),
            {"c": json.dumps(counts), "r": run_id},
        )


def _loaded(value: Any) -> dict[str, Any]:
    # PostgreSQL's driver decodes JSON; SQLite's gives the text.
    return dict(json.loads(value) if isinstance(value, str) else value or {})


def _zeroed(counts: dict[str, Any]) -> dict[str, Any]:
    def zero(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: 0 for key in value}
        return [] if isinstance(value, list) else 0

    return {key: zero(value) for key, value in counts.items() if key != "chunks"}


def _added(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    summed = dict(total)
    for key, value in part.items():
        if isinstance(value, dict):
            into = dict(summed.get(key) or {})
            for inner, number in value.items():
                before = into.get(inner, 0)
                into[inner] = max(before, number) if key in MOST else before + number
            summed[key] = into
        elif isinstance(value, list):
            summed[key] = (list(summed.get(key) or []) + value)[-MAX_PROBLEMS_KEPT:]
        else:
            summed[key] = summed.get(key, 0) + value
    return summed
