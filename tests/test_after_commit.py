"""Side effects are published only after the transaction commits, never for a rollback."""

from __future__ import annotations

from typing import Any

import payloads
import pytest
from conftest import COMPANY, Publisher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Client, EmailMessage
from models.contracts import AddClient, Event
from services import dispatch
from services.context import HandlerContext
from services.db import SessionFactory, UnitOfWork
from services.dispatch import Outcome, process_event
from services.errors import Transient


def test_callbacks_run_after_commit_and_see_committed_rows(
    session_factory: SessionFactory,
) -> None:
    seen: list[int] = []

    def count_clients() -> None:
        # Runs in another session: the row is visible only if the commit already happened.
        with session_factory() as other:
            seen.append(other.scalar(select(func.count()).select_from(Client)) or 0)

    with UnitOfWork(session_factory) as uow:
        uow.session.add(
            Client(
                id="C1",
                firstname="A",
                lastname="B",
                email="a@example.com",
                address1="x",
                city="c",
                state="s",
                postcode="p",
                country="GB",
                phonenumber="123",
            )
        )
        uow.after_commit(count_clients)
        uow.session.flush()
        assert seen == []
        uow.commit()
    assert seen == [1]


def test_callbacks_dropped_on_rollback(session_factory: SessionFactory) -> None:
    calls: list[str] = []

    def failing_handler() -> None:
        with UnitOfWork(session_factory) as uow:
            uow.after_commit(lambda: calls.append("published"))
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        failing_handler()
    assert calls == []


def test_no_publish_when_the_commit_fails(
    session_factory: SessionFactory, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that queued emails, then fails at commit: no email row, nothing published."""

    def add_then_break(ctx: HandlerContext, event: object) -> None:
        original(ctx, event)

        def refuse_commit(*_: object) -> None:
            raise Transient("database went away at commit")

        monkeypatch.setattr(ctx.session, "commit", refuse_commit)

    contract: type[Event] = AddClient
    original = dispatch.HANDLERS[contract]
    monkeypatch.setitem(dispatch.HANDLERS, contract, add_then_break)

    with pytest.raises(Transient):
        process_event(
            "clients.add",
            payloads.client("C1"),
            session_factory=session_factory,
            publish=publisher,
            company_name=COMPANY,
        )

    assert publisher.deliveries == []
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(EmailMessage)) == 0


def test_publish_happens_once_per_event_after_commit(
    session_factory: SessionFactory, db: Session
) -> None:
    observed: list[str] = []

    def publish(task_name: str, kwargs: dict[str, Any]) -> None:
        ids = kwargs["message_ids"]
        with session_factory() as other:
            rows = other.scalars(select(EmailMessage.status).where(EmailMessage.id.in_(ids)))
            observed.extend(rows)

    result = process_event(
        "clients.add",
        payloads.client("C1"),
        session_factory=session_factory,
        publish=publish,
        company_name=COMPANY,
    )
    assert result.outcome is Outcome.APPLIED
    # The delivery task would find its rows: they were committed before it was published.
    assert observed == ["queued"]
