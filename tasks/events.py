"""The event tasks, one per event of models.contracts.EVENTS: keyword arguments in,
services.dispatch does the rest."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from models.contracts import EVENTS
from models.settings import get_settings
from services.batch import process_batch
from services.dispatch import process_event
from services.rejections import event_id_of, record_rejection
from tasks import runtime
from tasks.base import ClientflowTask
from tasks.emails import deliver_after_commit
from tasks.failures import retry_or_bury
from tasks.policy import opt_out_policy


def _what_events_use() -> dict[str, Any]:
    """This process's database, broker, company, mail delivery and opt-out policy, as
    services.dispatch and services.batch take them."""
    return {
        "session_factory": runtime.session_factory(),
        "publish": runtime.publish,
        "company_name": get_settings().company,
        "deliver_now": deliver_after_commit,
        "opt_outs": opt_out_policy(),
    }


def event_task(name: str) -> Task[..., str]:
    """Register the task `name`; its payload is validated by the contract of that name."""

    @shared_task(name=name, bind=True, base=ClientflowTask)
    def run(self: Task[..., str], *args: Any, **payload: Any) -> str:
        if args:
            record_rejection(
                runtime.session_factory(),
                name,
                {"args": list(args), "kwargs": payload},
                "positional arguments are not accepted: publish the event as keyword arguments",
                event_id=event_id_of(payload),
            )
            return "rejected"
        try:
            result = process_event(name, payload, **_what_events_use())
        except Exception as exc:
            retry_or_bury(self, payload, exc)
        return result.outcome.value

    return run


def apply_together(task_name: str, payloads: list[dict[str, Any]]) -> list[str | None]:
    """Apply events of one kind together (services/batch.py), with what their task would
    use; the outcome of each, or None for one its own task must apply."""
    results = process_batch(task_name, payloads, **_what_events_use())
    return [None if result is None else result.outcome.value for result in results]


# Made from the one list of events, so a new contract gets its task (and nothing else can).
EVENT_TASKS = {name: event_task(name) for name in EVENTS}
