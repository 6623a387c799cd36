"""Services, invoices, the per-invoice notice log, and the holder's invoice-mail opt-out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
Money = sa.Numeric(12, 2)


def upgrade() -> None:
    # A plain ADD COLUMN, also on SQLite: batch mode would rebuild `clients` and lose the
    # lower(email) unique index, which SQLite cannot reflect. Existing holders keep
    # receiving invoice mail (the server default).
    op.add_column(
        "clients",
        sa.Column("invoice_emails", sa.Boolean(), nullable=False, server_default=sa.true()),
    )

    op.create_table(
        "services",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("billing_cycle", sa.String(16), nullable=False),
        sa.Column("next_due_date", sa.Date(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_services_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
    )
    op.create_index(op.f("ix_services_client_id"), "services", ["client_id"])
    op.create_index("ix_services_status_next_due_date", "services", ["status", "next_due_date"])

    op.create_table(
        "invoices",
        sa.Column("id", sa.String(96), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("number", sa.String(96), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("subtotal", Money, nullable=False),
        sa.Column("tax", Money, nullable=False),
        sa.Column("total", Money, nullable=False),
        sa.Column("balance", Money, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("date_paid", sa.Date(), nullable=True),
        sa.Column("service_id", sa.String(64), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_invoices_client_id_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    op.create_index(op.f("ix_invoices_client_id"), "invoices", ["client_id"])
    op.create_index(op.f("ix_invoices_service_id"), "invoices", ["service_id"])
    op.create_index("ix_invoices_status_id", "invoices", ["status", "id"])

    op.create_table(
        "invoice_notices",
        sa.Column("invoice_id", sa.String(96), nullable=False),
        sa.Column("notice", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("emails", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_notices_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["scheduled_runs.id"], name=op.f("fk_invoice_notices_run_id_scheduled_runs")
        ),
        sa.PrimaryKeyConstraint("invoice_id", "notice", name=op.f("pk_invoice_notices")),
    )


def downgrade() -> None:
    op.drop_table("invoice_notices")
    op.drop_table("invoices")
    op.drop_table("services")
    # SQLite 3.35+ drops a column in place, keeping the expression index.
    op.drop_column("clients", "invoice_emails")
