"""The one shape of every event task: keyword arguments in, services.dispatch does the rest."""

from __future__ import annotations

from typing import Any

from celery import Task

from services.dispatch import process_event
from services.rejections import event_id_of, record_rejection
from tasks.emails import deliver
from tasks.retry import backoff_seconds, is_transient
from workers import runtime
from workers.app import app
from workers.settings import get_settings


def publish_delivery(message_ids: list[str]) -> None:
    deliver.apply_async(kwargs={"message_ids": message_ids})


def event_task(name: str) -> Task[..., str]:
    """Register the task `name`; its payload is validated by the contract of that name."""

    @app.task(name=name, bind=True, max_retries=get_settings().event_max_retries)
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
            result = process_event(
                name,
                payload,
                session_factory=runtime.session_factory(),
                publish_delivery=publish_delivery,
                company_name=get_settings().company_name,
            )
        except Exception as exc:
            if is_transient(exc):
                raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
            # A bug, not bad input: still never silent. Recorded, then failed for Celery's log.
            record_rejection(
                runtime.session_factory(),
                name,
                payload,
                f"could not be applied: {type(exc).__name__}: {exc}",
            )
            raise
        return result.outcome.value

    return run
