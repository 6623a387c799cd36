"""JSON logs: with CLIENTFLOW_LOG_FORMAT=json every worker line is one JSON object, and the
lines of a task carry its name, its id and the event id, also for the email it caused."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import payloads
import pytest
from smtp_sink import SmtpSink
from worker_process import WorkerProcess

from workers.telemetry.json_logs import CONTEXT_FIELDS

pytestmark = pytest.mark.worker


@pytest.fixture
def json_worker(
    redis_url: str, new_postgres_database: Callable[[], str], smtp: SmtpSink, tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        broker_url=redis_url,
        database_url=new_postgres_database(),
        smtp_url=smtp.url,
        workdir=tmp_path / "worker",
        extra_settings={"log_format": "json"},
    )
    # This suite runs as root in CI, and Celery warns about that on stderr before any
    # logging exists; it is the one line no log format can reach.
    process.env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
    try:
        process.start()
        yield process
    finally:
        process.close()


def test_every_line_is_json_and_one_event_can_be_followed(
    json_worker: WorkerProcess, smtp: SmtpSink
) -> None:
    worker = json_worker
    payload = payloads.client("C1")
    worker.publish("clients.add", payload)
    worker.wait_applied(payload["event_id"])
    smtp.wait_for(1)
    worker.wait_idle()

    # Read while the worker runs: at shutdown Celery prints a plain "worker: Warm shutdown"
    # notice past logging (docs/operations.md). A line still being written waits for the next read.
    written = worker.log_text().rpartition("\n")[0]
    lines: list[dict[str, Any]] = []
    for number, line in enumerate(written.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            pytest.fail(f"worker.log line {number} is not JSON: {line!r}")
    assert lines
    for record in lines:
        assert {"timestamp", "level", "logger", "message", *CONTEXT_FIELDS} <= set(record)

    of_event = [r for r in lines if r["event_id"] == payload["event_id"]]
    tasks = {r["task_name"] for r in of_event}
    # The welcome goes out in the event's own task, right after its commit.
    assert tasks == {"clients.add"}
    assert any("clients.add" in r["message"] and "succeeded" in r["message"] for r in of_event)
    sent = "emails of the event: 1 sent, 0 failed, 0 to retry"
    assert any(r["message"] == sent for r in of_event)
    for record in of_event:
        assert record["task_id"], record
    # Arguments carry client details; they stay out of log storage.
    assert not any("c1@example.com" in json.dumps(r) for r in lines)
