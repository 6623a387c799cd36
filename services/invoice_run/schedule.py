"""Which notice an unpaid invoice is due on a given day, in Python and as SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import case, literal

from models.billing import Invoice, Notice

# The stages of an unpaid invoice, in the order they fall due.
STAGES = (
    Notice.INVOICE_CREATED,
    Notice.PAYMENT_REMINDER,
    Notice.FIRST_OVERDUE,
    Notice.SECOND_OVERDUE,
    Notice.THIRD_OVERDUE,
)


@dataclass(frozen=True)
class NoticeSchedule:
    reminder_days: int  # the Payment Reminder, this many days before the due date
    overdue_days: tuple[int, int, int]  # First, Second, Third Overdue, days after it

    def _offsets(self) -> list[tuple[Notice, int]]:
        """(stage, days after the due date it starts), Invoice Created excluded."""
        first, second, third = self.overdue_days
        return [
            (Notice.PAYMENT_REMINDER, -self.reminder_days),
            (Notice.FIRST_OVERDUE, first),
            (Notice.SECOND_OVERDUE, second),
            (Notice.THIRD_OVERDUE, third),
        ]

    def started(self, invoice_date: date, due_date: date, on: date) -> list[Notice]:
        """Every stage whose day has come by `on`, oldest first."""
        if invoice_date > on:
            return []
        return [Notice.INVOICE_CREATED] + [
            notice for notice, days in self._offsets() if due_date + timedelta(days=days) <= on
        ]

    def current_stage_sql(self, on: date) -> Any:
        """The newest started stage of Invoice rows, as a SQL CASE over due_date.

        A stage has started when due_date + offset <= on, i.e. due_date <= on - offset: the
        bounds are plain dates computed here, so the same SQL runs on PostgreSQL and SQLite.
        """
        newest_first = reversed(self._offsets())
        whens = [
            (Invoice.due_date <= on - timedelta(days=days), literal(notice.value))
            for notice, days in newest_first
        ]
        return case(*whens, else_=literal(Notice.INVOICE_CREATED.value))


def decide(started: list[Notice], recorded: set[str]) -> tuple[Notice | None, list[Notice]]:
    """The one notice to send now, and the started ones it supersedes (recorded as skipped).

    Invoice Created comes first, always: it is the invoice itself. After that only the newest
    stage is sent; a run after missed days skips what it missed instead of sending a burst.
    """
    if not started:
        return None, []
    send = started[-1] if Notice.INVOICE_CREATED.value in recorded else Notice.INVOICE_CREATED
    if send.value in recorded:
        return None, []
    skipped = [n for n in started if n is not send and n.value not in recorded]
    return send, skipped
