"""The worker process's own hooks: broker folders before start, fresh resources per pool child.

workers/app.py imports this module, so every worker started from the app has them.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from models.settings import Settings, get_settings
from tasks import runtime


def prepare_embedded_broker(settings: Settings) -> None:
    """The filesystem transport needs its folders; made on use, not on import."""
    if settings.broker_url.startswith("filesystem"):
        for sub in ("queue", "processed", "control"):
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


@signals.celeryd_init.connect
def _prepare_worker(**_: Any) -> None:
    prepare_embedded_broker(get_settings())


@signals.worker_process_init.connect
def _fresh_resources_in_child(**_: Any) -> None:
    runtime.forget_after_fork()


@signals.worker_process_shutdown.connect
def _close_resources_in_child(**_: Any) -> None:
    runtime.close_mail_transport()
