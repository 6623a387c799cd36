"""Sessions, and the unit of work that runs side effects only after commit."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = sessionmaker[Session]


def make_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(engine, expire_on_commit=False)


_STATEMENT_AT_A_TIME = "statement_at_a_time"


# One per factory (a process has one): made once, as each would hold its own engine proxy.
@functools.cache
def statement_at_a_time(session_factory: SessionFactory) -> SessionFactory:
    """Sessions whose every statement commits on its own, for work made of single idempotent
    statements (recording a delivery's outcome): no BEGIN and COMMIT around each one, two
    round trips fewer. PostgreSQL only; SQLite keeps its transactions (its BEGIN is ours,
    models/engine.py), which changes nothing there but speed. A factory bound to one
    connection (tests run inside an outer transaction) is left as it is."""
    engine = session_factory.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql":
        return session_factory
    return sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
        info={_STATEMENT_AT_A_TIME: True},
    )


def commits_each_statement(session: Session) -> bool:
    """Whether the session is a statement_at_a_time one (each statement commits itself)."""
    return bool(session.info.get(_STATEMENT_AT_A_TIME))


def done(session: Session) -> None:
    """Make what the session did so far durable: a commit, or on a statement-at-a-time
    session a flush of pending ORM changes (each statement commits itself). Not committing
    there keeps the connection checked out: handed back, the next statement would check it
    out again and the pool would ping it first, a round trip per email."""
    if commits_each_statement(session):
        session.flush()
    else:
        session.commit()


class UnitOfWork:
    """One transaction; callbacks registered with after_commit run only once it committed.

    This is how side effects (publishing delivery tasks) never fire for a change that
    rolled back, and never run before the rows they refer to are visible to other workers.
    """

    def __init__(self, session_factory: SessionFactory) -> None:
        self._session_factory = session_factory
        self._after_commit: list[Callable[[], object]] = []

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self._after_commit = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.rollback()
        self.session.close()

    def after_commit(self, callback: Callable[[], object]) -> None:
        self._after_commit.append(callback)

    def commit(self) -> None:
        self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        self._after_commit = []
        self.session.rollback()
