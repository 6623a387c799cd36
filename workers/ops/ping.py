"""Health: does the broker answer, does the database answer, does a worker answer a ping."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.db import SessionFactory
from workers.ops import celery_workers
from workers.ops.queues import CONNECT_TIMEOUT


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_broker(app: Celery) -> Check:
    try:
        with app.connection_for_read(connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1)
            return Check("broker", True, connection.as_uri())
    except Exception as exc:  # kombu raises transport-specific errors
        return Check("broker", False, f"{type(exc).__name__}: {exc}")


def check_database(session_factory: SessionFactory) -> Check:
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
            url = session.get_bind().engine.url.render_as_string(hide_password=True)
            return Check("database", True, url)
    except SQLAlchemyError as exc:
        return Check("database", False, str(getattr(exc, "orig", exc)).splitlines()[0])


def check_workers(
    app: Celery, *, local: bool = False, timeout: float = celery_workers.INSPECT_TIMEOUT
) -> Check:
    """At least one worker answers; with local=True, one on this host (a container's own)."""
    try:
        names = celery_workers.ping(app, timeout)
    except Exception as exc:
        return Check("workers", False, f"{type(exc).__name__}: {exc}")
    host = socket.gethostname()
    if local:
        names = on_host(names, host)
    where = f" on {host}" if local else ""
    if not names:
        return Check("workers", False, f"no worker{where} answered within {timeout:g}s")
    return Check("workers", True, ", ".join(names))


def on_host(names: list[str], host: str) -> list[str]:
    """The workers of one host: Celery names a worker "<name>@<hostname>" by default."""
    return [name for name in names if name.rpartition("@")[2] == host]


def run_checks(app: Celery, session_factory: SessionFactory, *, local: bool = False) -> list[Check]:
    broker = check_broker(app)
    checks = [broker, check_database(session_factory)]
    if broker.ok:
        checks.append(check_workers(app, local=local))
    else:
        checks.append(Check("workers", False, "not asked: the broker is unreachable"))
    return checks
