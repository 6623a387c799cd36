"""The twelve events are listed in three places (contracts, handlers, tasks): they must agree.

Until one registry makes all three (issue 11), this is what stops an event added to one list
and forgotten in another: a contract with no handler, or a task Celery would reject.
"""

from __future__ import annotations

from models.contracts import EVENTS
from services.dispatch import HANDLERS
from workers.app import app


def test_every_event_has_its_contract_its_handler_and_its_task() -> None:
    app.loader.import_default_modules()
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    own_tasks = {"emails.deliver", "invoices.run", "outbox.relay", "ops.housekeeping"}
    assert set(EVENTS) == set(HANDLERS)
    assert ours - own_tasks == set(EVENTS)
    assert len(EVENTS) == 12
