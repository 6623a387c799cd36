"""outbox.relay (run by beat): publish what the broker could not take at commit time."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from models.settings import get_settings
from services.outbox import relay as relay_outbox
from tasks import runtime
from tasks.base import ClientflowTask


@shared_task(name="outbox.relay", base=ClientflowTask)
def relay() -> int:
    settings = get_settings()
    return relay_outbox(
        runtime.session_factory(),
        runtime.publish,
        min_age=timedelta(seconds=settings.outbox_min_age_seconds),
        sending_lease=timedelta(seconds=settings.sending_lease_seconds),
        forgotten_after=timedelta(seconds=settings.email_redeliver_after_seconds),
    )
