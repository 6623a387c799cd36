"""One list of events, models.contracts.EVENTS: the tasks are made from it, the handlers
cover it."""

from __future__ import annotations

from models.contracts import EVENTS
from services.dispatch import HANDLERS
from workers.app import app


def test_every_event_has_its_contract_its_handler_and_its_task() -> None:
    app.loader.import_default_modules()
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    own_tasks = {
        "emails.deliver",
        "invoices.run",
        "invoices.run_chunk",
        "outbox.relay",
        "ops.housekeeping",
    }
    assert set(HANDLERS) == set(EVENTS.values())
    assert ours - own_tasks == set(EVENTS)
    assert len(EVENTS) == 14
