"""The README's publishing example is pasted and run as it stands, against a real worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from smtp_sink import SmtpSink
from worker_process import WorkerProcess, worker_fixture

from models.clients import Contact
from workers.ops.queues import read_queues

pytestmark = pytest.mark.worker

worker = worker_fixture(start=False)


def publishing_example(repo_root: Path) -> str:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Publishing an event", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its publishing example"
    return match.group(1)


def test_readme_publishing_example_runs_as_written(
    worker: WorkerProcess, smtp: SmtpSink, repo_root: Path
) -> None:
    code = publishing_example(repo_root)
    assert 'broker="redis://127.0.0.1:6379/0"' in code
    # The only change: the test's Redis database instead of the reader's.
    exec(compile(code.replace("redis://127.0.0.1:6379/0", worker.broker_url), "README", "exec"))

    # Published before any worker runs: both wait in `events`, and ops can tell for how long.
    [events] = [queue for queue in read_queues(worker.app) if queue.name == "events"]
    assert events.depth == 2
    assert events.oldest_published_at is not None

    worker.start()
    worker.wait_applied("crm-2026-000123", "crm-2026-000124")
    welcome = smtp.wait_for(1)[0].message
    assert welcome["To"] == "Ada Lovelace <ada@analytical.example>"
    contacts = worker.rows(Contact)
    assert [(c.id, c.client_id, c.invoice) for c in contacts] == [("K1", "C1001", True)]
