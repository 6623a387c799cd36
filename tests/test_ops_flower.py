"""Flower, unchanged, against our app: it sees our worker and the tasks it processed."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import payloads
import pytest
from ops_helpers import ops_env
from servers import free_port
from worker_process import WorkerProcess, wait_until, worker_fixture

pytestmark = pytest.mark.worker

CREDENTIALS = "ops:test-secret"

stopped_worker = worker_fixture(name="stopped_worker", start=False)


@pytest.fixture
def flower(stopped_worker: WorkerProcess) -> Iterator[str]:
    """A real `celery -A workers.app flower` on the worker's broker; yields its base URL."""
    port = free_port()
    env = ops_env(stopped_worker)
    # Flower 2 serves its HTTP API only with authentication configured: basic auth, as
    # docker-compose.yml configures it.
    env["FLOWER_BASIC_AUTH"] = CREDENTIALS
    log = stopped_worker.workdir.parent / "flower.log"
    stopped_worker.workdir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _get(f"{base}/healthcheck") is not None or process.poll() is not None,
            "Flower answering",
        )
        if process.poll() is not None:
            raise AssertionError(f"flower exited {process.returncode}:\n{log.read_text()}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(url: str) -> Any:
    token = base64.b64encode(CREDENTIALS.encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


def test_flower_sees_our_worker_and_a_processed_task(
    stopped_worker: WorkerProcess, flower: str
) -> None:
    worker = stopped_worker
    worker.start()

    def worker_listed() -> Any:
        workers = _get(f"{flower}/api/workers?refresh=1") or {}
        return worker.hostname in workers and workers[worker.hostname]

    info = wait_until(worker_listed, f"{worker.hostname} in Flower's /api/workers")
    queues = sorted(q["name"] for q in info.get("active_queues", []))
    assert queues == ["celery", "emails", "events", "invoice_run"]

    # Task events are not stored by the broker, so Flower only knows what it saw live; wait
    # until its event receiver has heard from our worker before publishing.
    def heard() -> bool:
        alive = _get(f"{flower}/api/workers?status=1") or {}
        return alive.get(worker.hostname) is True

    wait_until(heard, "Flower receiving our worker's events")
    # Workers send no task events until asked (CLIENTFLOW_TASK_EVENTS): Flower turns them on
    # itself every few seconds. Publish until it has seen one of them run.
    published: list[str] = []

    def processed() -> Any:
        payload = payloads.client(f"C{len(published)}", send_welcome=False)
        worker.publish("clients.add", payload)
        published.append(payload["event_id"])
        tasks = _get(f"{flower}/api/tasks?limit=50") or {}
        done = [
            t
            for t in tasks.values()
            if t.get("name") == "clients.add" and t.get("state") == "SUCCESS"
        ]
        return done

    done = wait_until(
        processed, "a clients.add task as SUCCESS in Flower's /api/tasks", interval=1.0
    )
    task = done[0]
    assert task["worker"] == worker.hostname
    assert any(event_id in str(task.get("kwargs")) for event_id in published)


def test_the_api_refuses_a_request_without_credentials(flower: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{flower}/api/workers", timeout=10)
    assert refused.value.code == 401
