"""tasks/shield.py: a SIGTERM inside the critical block waits for the block to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass

import payloads
import pytest
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.orm import Session
from worker_process import WorkerProcess, wait_until, worker_fixture

from models.emails import EmailMessage, EmailStatus
from tasks import shield

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from tasks import shield

    mode = sys.argv[1]
    if mode == "previous-handler":
        def handler(signum, frame):
            print("previous handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
    if mode == "soft-limit":
        # billiard's soft time limit handler raises SoftTimeLimitExceeded in the task.
        def soft_limit(signum, frame):
            raise TimeoutError("soft time limit")
        signal.signal(signal.SIGUSR1, soft_limit)
    shield.install()
    shield.install()  # twice: must not chain to itself
    if mode == "outside":
        print("ready", flush=True)
        time.sleep(30)
        print("finished", flush=True)
    elif mode == "soft-limit":
        try:
            with shield.uninterruptible():
                print("ready", flush=True)
                time.sleep(1)  # the SIGUSR1 arrives during this
                print("finished", flush=True)
        except TimeoutError as exc:
            print(f"raised at the block's end: {exc}", flush=True)
            sys.exit(4)
    else:
        with shield.uninterruptible():
            print("ready", flush=True)
            time.sleep(1)  # the SIGTERM arrives during this
            print("finished", flush=True)
        print("after the block", flush=True)
    """
)


HELD_NOTICE = "SIGTERM held while an email was sent and recorded; acting on it now (pid {pid})"


@dataclass(frozen=True)
class Terminated:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run_and_terminate(mode: str, signum: int = signal.SIGTERM) -> Terminated:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signum)
    out, err = child.communicate(timeout=30)
    return Terminated(child.pid, child.returncode, "ready\n" + out, err)


def test_sigterm_in_the_block_is_held_until_the_block_ends() -> None:
    result = run_and_terminate("inside")
    assert result.stdout.splitlines() == ["ready", "finished"]
    assert result.returncode == -signal.SIGTERM
    # What ops read in the worker log when it happens.
    assert HELD_NOTICE.format(pid=result.pid) in result.stderr


def test_sigterm_outside_the_block_acts_at_once() -> None:
    result = run_and_terminate("outside")
    assert result.stdout.splitlines() == ["ready"]
    assert result.returncode == -signal.SIGTERM


def test_the_soft_time_limit_in_the_block_is_held_until_the_block_ends() -> None:
    result = run_and_terminate("soft-limit", signal.SIGUSR1)
    assert result.stdout.splitlines() == [
        "ready",
        "finished",
        "raised at the block's end: soft time limit",
    ]
    assert result.returncode == 4
    assert (
        "the soft time limit (SIGUSR1) held while an email was sent and recorded; acting on it "
        f"now (pid {result.pid})"
    ) in result.stderr


def test_in_another_thread_the_block_just_runs() -> None:
    # --pool threads runs tasks outside the main thread, where signal.signal() raises.
    ran: list[str] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            with shield.uninterruptible():
                ran.append("sent and recorded")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=deliver)
    thread.start()
    thread.join(timeout=10)
    assert (ran, errors) == (["sent and recorded"], [])
    assert signal.getsignal(signal.SIGTERM) is not shield._on_signal


def test_a_handler_installed_before_runs_once_the_block_ends() -> None:
    result = run_and_terminate("previous-handler")
    assert result.stdout.splitlines() == ["ready", "finished", "previous handler ran"]
    assert result.returncode == 3


# One pool process, so the welcome email is delivered by the process the test terminates.
worker = worker_fixture(concurrency=1)


@pytest.mark.worker
def test_a_pool_process_terminated_mid_send_records_the_email_first(
    worker: WorkerProcess, smtp: SmtpSink
) -> None:
    # What Celery does to a running late-ack task when the broker connection drops: SIGTERM
    # its pool process. billiard installs its own SIGTERM handler in every pool process after
    # Celery's initializer, so this only passes if the shield is in place where it matters.
    [pool_pid] = worker.pool_pids()
    smtp.data_delay = 2.0  # the server is slow to say 250: the SIGTERM lands in between
    worker.publish("clients.add", payloads.client("C1"))
    smtp.wait_for_data()
    os.kill(pool_pid, signal.SIGTERM)

    def status(session: Session) -> str | None:
        found = session.scalars(select(EmailMessage.status)).all()
        return found[0] if found == [EmailStatus.SENT] else None

    # Recorded as sent, not left in `sending` for the relay to send again.
    worker.wait_for_db(status, "the welcome email recorded as sent", timeout=20)
    wait_until(lambda: not _alive(pool_pid), f"pool process {pool_pid} to exit", timeout=20)
    assert HELD_NOTICE.format(pid=pool_pid) in worker.log_text()
    worker.wait_idle()
    assert len(smtp.messages) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0 until its parent reaps it; billiard reaps promptly.
    return True
