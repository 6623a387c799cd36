"""CLIENTFLOW_SENT_RECORD_COMMIT=asynchronous on a real worker: every email recorded sent,
each received once (the statement's own setting: tests/test_sent_records.py)."""

from __future__ import annotations

from collections import Counter

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select
from worker_process import WorkerProcess, worker_fixture

from models.emails import EmailMessage

pytestmark = pytest.mark.worker

asynchronous_worker = worker_fixture(
    name="asynchronous_worker", extra_settings={"sent_record_commit": "asynchronous"}
)


def test_welcomes_recorded_sent_asynchronously_are_each_sent_once(
    asynchronous_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = asynchronous_worker
    for number in range(30):
        worker.publish("clients.add", payloads.client(f"C{number}"))

    worker.wait_no_email_owed()
    worker.wait_idle()

    with worker.sessions() as session:
        rows = session.scalars(select(EmailMessage)).all()
    assert len(rows) == 30
    assert {(row.status, row.attempts) for row in rows} == {("sent", 1)}
    received = Counter(address for m in smtp.wait_for(30) for address in m.rcpt_tos)
    assert received == Counter(row.to_address for row in rows)
    assert set(received.values()) == {1}
