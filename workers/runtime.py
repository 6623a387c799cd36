"""Per-process resources (database engine, mail transport), created on first use.

Created lazily so a prefork worker builds its engine in each child, never sharing sockets
inherited across fork.
"""

from __future__ import annotations

from functools import lru_cache

from services.db import SessionFactory, make_engine, make_session_factory
from services.mail.transports import MailTransport, transport_for
from workers.settings import get_settings


@lru_cache(maxsize=1)
def session_factory() -> SessionFactory:
    return make_session_factory(make_engine(get_settings().effective_database_url))


@lru_cache(maxsize=1)
def mail_transport() -> MailTransport:
    settings = get_settings()
    return transport_for(settings.smtp_url, settings.effective_mail_dir, settings.smtp_timeout)
