"""What every `clientflow` subcommand shares: the console, a database session, the broker, and
the one-line explanation of a failure a person can fix (the database, the broker, a setting).
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn

import typer
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from sqlalchemy import exc as sa
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from models.settings import Settings, get_settings
from services.mail.render import TemplateError
from tasks import runtime
from workers.app import app
from workers.signals import prepare_embedded_broker

if TYPE_CHECKING:
    from celery import Celery

console = Console()

# Seconds to wait for the broker to answer before a command that publishes gives up.
BROKER_TIMEOUT = 5.0


@contextmanager
def database() -> Iterator[Session]:
    """A session. A database that cannot be reached or was never migrated is explained in one
    line by the `clientflow` command itself (see explain), like every other such failure."""
    with runtime.session_factory()() as session:
        yield session


def celery_app() -> Celery:
    """The worker's Celery app, imported on use: most subcommands need none."""

    # The embedded filesystem broker reads folders that exist only once something used it.
    prepare_embedded_broker(get_settings())
    return app


def require_broker() -> None:
    """Connect to the broker or raise: for commands that publish tasks.

    The outbox relay keeps what it cannot publish for later, so without this check `outbox
    relay` would report "published 0" against a broker that is down.
    """
    with celery_app().connection_for_write(connect_timeout=BROKER_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=1)


def when(value: object) -> str:

    return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, datetime) else "-"


def refuse(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr: something asked for that is not there or
    cannot be done (exit 1; a bad option or value is Typer's usage error, exit 2)."""
    typer.secho(f"clientflow: {' '.join(message.split())}", fg="red", err=True)
    raise typer.Exit(code)


def print_json(data: object) -> None:
    """For `--json`: one document on stdout, exact text (markup and escapes as JSON escapes)."""
    typer.echo(json.dumps(data, indent=2, default=_json_value))


def row_record(row: object) -> dict[str, object]:
    """Every column of a mapped row by attribute name, in declaration order."""
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def _json_value(value: object) -> object:
    # Times as ISO 8601 (UTC, with offset); amounts as their exact text, never a float.
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- one line for a failure a person can fix ------------------------------------------------


def explain(exc: BaseException) -> str | None:
    """What is wrong and what to do, on one line; None for a failure that is a bug."""
    seen: BaseException | None = exc
    for _ in range(5):  # the error itself, or what it was raised from
        if seen is None:
            return None
        line = _explain_one(seen)
        if line is not None:
            return " ".join(line.split())
        seen = seen.__cause__
    return None


def _explain_one(exc: BaseException) -> str | None:
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return _bad_settings(exc)
    if isinstance(exc, sa.ArgumentError):
        return (
            f"CLIENTFLOW_DATABASE_URL is not a database URL SQLAlchemy can use ({_first(exc)}): "
            "set it like postgresql+psycopg://user@host:5432/clientflow, or unset it for SQLite"
        )
    if isinstance(exc, sa.DBAPIError):
        return _database(exc)
    if _is_broker_error(exc):
        return (
            f"cannot reach the broker at {_broker_url()} ({_first(exc)}): "
            "start it, or set CLIENTFLOW_BROKER_URL to the one the workers use"
        )
    if isinstance(exc, KeyError) and str(exc.args[0] if exc.args else "").startswith(
        "No such transport"
    ):
        return (
            f"CLIENTFLOW_BROKER_URL names no known broker ({exc.args[0]}): "
            "use redis://host:6379/0, or filesystem:// for the embedded one"
        )
    if isinstance(exc, TemplateError):  # `templates preview` of a template that cannot render
        return exc.reason
    if isinstance(exc, OSError):
        return _os_error(exc)
    return None


def _bad_settings(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:  # a rule between settings (model validator)
            problems.append(message)
            continue
        name = f"CLIENTFLOW_{str(loc[0]).upper()}"
        value = error.get("input")
        shown = "" if "url" in name.lower() or not isinstance(value, str) else f"={value[:40]!r}"
        problems.append(f"{name}{shown}: {message}")
    unique = list(dict.fromkeys(problems))
    return f"bad setting: {'; '.join(unique)}; fix or unset it (see docs/configuration.md)"


def _database(exc: sa.DBAPIError) -> str | None:
    text = _first(exc)
    where = _database_url()
    lowered = str(exc.orig).lower()
    if any(s in lowered for s in ("no such table", "no such column")) or (
        isinstance(exc, sa.ProgrammingError) and "does not exist" in lowered
    ):
        return (
            f"the database at {where} is not migrated ({text}): "
            "run `clientflow db upgrade` with the same CLIENTFLOW_DATABASE_URL"
        )
    if not isinstance(exc, sa.OperationalError | sa.InterfaceError):
        return None  # a refused statement is a bug, with its traceback
    if "does not exist" in lowered and ("role" in lowered or "database" in lowered):
        todo = "create the role and database, then run `clientflow db upgrade`"
    elif "password" in lowered or "authentication" in lowered:
        todo = "check the user and password in CLIENTFLOW_DATABASE_URL"
    elif "unable to open database file" in lowered:
        todo = "check that the folder of the SQLite file exists and is writable"
    elif "locked" in lowered or "timeout" in lowered or "timed out" in lowered:
        todo = "the database is busy or slow; try again"
    else:
        todo = "start the database, or set CLIENTFLOW_DATABASE_URL to the one the workers use"
    return f"cannot reach the database at {where} ({text}): {todo}"


def _is_broker_error(exc: BaseException) -> bool:

    return isinstance(exc, KombuOperationalError | RedisConnectionError | RedisTimeoutError)


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or _first(exc)
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on{where}: the address is already in use; "
            "stop what listens there or choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL or (exc.errno is not None and exc.errno < 0):
        # getaddrinfo's errors are negative: a name that does not resolve
        return f"cannot listen on{where} ({reason}): give an address of this host with --host"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot use{where} ({reason}): check its permissions and CLIENTFLOW_DATA_DIR"
    return f"{reason}{where and ':' + where}: check the path or address and try again"


def _first(exc: BaseException) -> str:
    """The telling part of an error message: its first line, without the driver's preamble."""
    text = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    # psycopg: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  ...'
    line = line.rsplit(" failed: ", 1)[-1]
    line = re.sub(r"^(FATAL|ERROR):\s+", "", line)
    return line.strip() or type(exc).__name__


def _database_url() -> str:

    try:
        url = get_settings().effective_database_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # the explanation of one failure must not fail
        return "CLIENTFLOW_DATABASE_URL"


def _broker_url() -> str:

    try:
        return str(maybe_sanitize_url(get_settings().broker_url))
    except Exception:
        return "CLIENTFLOW_BROKER_URL"
