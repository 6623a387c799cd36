"""Lets a pool process finish recording an SMTP acceptance before a SIGTERM (or the soft
time limit) ends it.

Celery terminates (SIGTERM) the pool process running a late-acknowledged task when the broker
connection is lost (worker_cancel_long_running_tasks_on_connection_loss, see workers/app.py),
because that task's message will be delivered again. A delivery ended between the SMTP
server's 250 and the commit of `sent` would send the email a second time once its claim
expires; the fault suite's Redis restart test saw exactly that. Inside `uninterruptible()` a
SIGTERM is held and acted on as soon as the block ends, so the window only stays open to
SIGKILL. The block is short: one SMTP transaction (bounded by CLIENTFLOW_SMTP_TIMEOUT) and
one commit.

The block installs the handler itself, each time it is entered. A handler installed when the
pool process starts (worker_process_init) does not survive: billiard runs Celery's process
initializer first and then replaces every terminate handler with its own (reset_signals), so
the shield was silently gone in every real pool process while its subprocess tests passed.
Whatever handler is in place at entry (billiard's, which exits the process) is the one acted
on when the block ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# SIGTERM: Celery cancelling the task (above). SIGUSR1: billiard's soft time limit, which
# raises SoftTimeLimitExceeded wherever the task is; inside the block that would be between
# the 250 and the commit of `sent`, so it waits for the block's end like a SIGTERM.
HELD = (signal.SIGTERM, signal.SIGUSR1)
_NAMES: dict[int, str] = {
    signal.SIGTERM: "SIGTERM",
    signal.SIGUSR1: "the soft time limit (SIGUSR1)",
}

_depth = 0
_held: list[int] = []
_previous: dict[int, Any] = {}


def install() -> None:
    """Route the held signals through the shield, keeping each current handler to act on
    (idempotent)."""
    for signum in HELD:
        current = signal.getsignal(signum)
        if current is not _on_signal:
            _previous[signum] = current
            signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _depth:
        # Nothing logged here: a signal handler may run while logging holds its lock. The
        # block's end says it, through logging, so JSON logs carry it with the task's ids.
        if signum not in _held:
            _held.append(signum)
        return
    _act(signum, frame)


def _act(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default action: die of the signal, as if the shield had never been there.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextmanager
def uninterruptible() -> Iterator[None]:
    """Hold SIGTERM and the soft time limit until the block ends (nesting allowed)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        # Python runs signal handlers in the main thread only, and only it may install one: a
        # task in a thread pool (--pool threads) has no SIGTERM of its own to hold.
        yield
        return
    if not _depth:
        install()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _held:
            held = list(_held)
            _held.clear()
            for signum in held:
                log.warning(
                    "%s held while an email was sent and recorded; acting on it now (pid %d)",
                    _NAMES.get(signum, str(signum)),
                    os.getpid(),
                )
                _act(signum, None)
