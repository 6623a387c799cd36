"""Running `clientflow ops ...` against a WorkerProcess's broker and database, in subprocesses."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.parser import text_string_to_metric_families
from servers import environ_without_settings, free_port
from worker_process import WorkerProcess, wait_until

from workers.ops.snapshot import Snapshot

CLI = [sys.executable, "-c", "from workers.cli import main; main()"]


def ops_env(worker: WorkerProcess) -> dict[str, str]:
    env = environ_without_settings()
    env.update(
        CLIENTFLOW_DATABASE_URL=worker.database_url,
        CLIENTFLOW_BROKER_URL=worker.broker_url,
        CLIENTFLOW_DATA_DIR=str(worker.workdir),
        COLUMNS="200",
    )
    return env


def run_ops(
    worker: WorkerProcess, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CLI, "ops", *args],
        env=ops_env(worker),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"clientflow ops {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
        )
    return done


def status_json(worker: WorkerProcess) -> Snapshot:
    """`ops status --json`, checked against the documented model (unknown keys fail).

    Its exit status (1 when something is unhealthy) is for the tests that look at it."""
    return Snapshot.model_validate_json(run_ops(worker, "status", "--json", check=False).stdout)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def exporter(worker: WorkerProcess) -> Iterator[str]:
    """A running `clientflow ops exporter`; yields its /metrics URL."""
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "ops", "exporter", "--port", str(port), "--address", "127.0.0.1"],
        env=ops_env(worker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url) or process.poll() is not None, f"the exporter at {url}")
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"the exporter exited {process.returncode}:\n{stderr}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stderr:
            process.stderr.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


def scrape(url: str) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own text parser."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
