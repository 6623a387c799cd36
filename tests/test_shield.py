"""workers/shield.py: a SIGTERM inside the critical block waits for the block to end."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from workers import shield

    mode = sys.argv[1]
    if mode == "previous-handler":
        def handler(signum, frame):
            print("previous handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
    shield.install()
    shield.install()  # twice: must not chain to itself
    if mode == "outside":
        print("ready", flush=True)
        time.sleep(30)
        print("finished", flush=True)
    else:
        with shield.uninterruptible():
            print("ready", flush=True)
            time.sleep(1)  # the SIGTERM arrives during this
            print("finished", flush=True)
        print("after the block", flush=True)
    """
)


def run_and_terminate(mode: str) -> subprocess.CompletedProcess[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    return subprocess.CompletedProcess(child.args, child.returncode, "ready\n" + out, err)


def test_sigterm_in_the_block_is_held_until_the_block_ends() -> None:
    result = run_and_terminate("inside")
    assert result.stdout.splitlines() == ["ready", "finished"]
    assert result.returncode == -signal.SIGTERM
    # What ops read in the worker log when it happens.
    assert "SIGTERM held until the email being delivered is recorded" in result.stderr
    assert "acting on the held SIGTERM" in result.stderr


def test_sigterm_outside_the_block_acts_at_once() -> None:
    result = run_and_terminate("outside")
    assert result.stdout.splitlines() == ["ready"]
    assert result.returncode == -signal.SIGTERM


def test_a_handler_installed_before_runs_once_the_block_ends() -> None:
    result = run_and_terminate("previous-handler")
    assert result.stdout.splitlines() == ["ready", "finished", "previous handler ran"]
    assert result.returncode == 3
