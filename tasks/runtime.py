"""Per-process resources (database engine, mail transport, publisher), created on first use.

Created lazily, and dropped in each forked pool child, so no two processes ever share a
database socket inherited across fork.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import current_app

from models.engine import make_engine
from models.settings import get_settings
from services.db import SessionFactory, make_session_factory
from services.mail.transports import MailTransport, SmtpTransport, transport_for
from services.redaction import ids_only


@lru_cache(maxsize=1)
def session_factory() -> SessionFactory:
    # A pooled connection is pinged only when it was idle for a while (models.engine).
    engine = make_engine(get_settings().effective_database_url, ping_when_idle=True)
    return make_session_factory(engine)


@lru_cache(maxsize=1)
def mail_transport() -> MailTransport:
    settings = get_settings()
    return transport_for(settings.smtp_url, settings.effective_mail_dir, settings.smtp_timeout)


def publish(task_name: str, kwargs: dict[str, Any], **options: Any) -> None:
    """Send one task by name through the process's Celery app (workers.app: its routes and
    serializer), which Celery makes the current app when it is created.

    `options` are send_task's (countdown, retries).
    """
    current_app.send_task(
        task_name, kwargs=kwargs, argsrepr="()", kwargsrepr=ids_only(kwargs), **options
    )


def forget_after_fork() -> None:
    """In a new pool child: drop the parent's pool without closing its sockets."""
    if session_factory.cache_info().currsize:
        engine = session_factory().kw["bind"]
        engine.dispose(close=False)
    session_factory.cache_clear()
    # A kept SMTP connection is the parent's socket: the child opens its own.
    mail_transport.cache_clear()


def close_mail_transport() -> None:
    """A pool process going away says QUIT on its kept SMTP connection."""
    if mail_transport.cache_info().currsize:
        transport = mail_transport()
        if isinstance(transport, SmtpTransport):
            transport.close()
