"""Events that wait for a pool process go to it together, to be applied in one transaction.

Celery hands a ready task to the pool only when a pool process is free: the worker's semaphore
(one slot per process) queues the rest. Here the event tasks that services/batch.py can apply
together wait in a buffer of their own instead, and when a slot frees, everything buffered (up
to CLIENTFLOW_EVENT_BATCH_SIZE) leaves as one pool job. An idle worker therefore runs each
event at once, on its own, exactly as before; a busy one takes what piled up in one go, which
is where one transaction for many events pays (bench/README.md).

What each message becomes is still decided one by one. An event the batch applied is finished
as its task would be (acknowledged after the commit, counted for ops). Every other one, and
every event of a batch whose job failed or whose pool process died, goes on to its own task
run, through the worker's ordinary path: its retries, refusals, time limits and dead letters
are exactly a single task's. Applying an event twice is harmless (the inbox), so a batch that
half happened is simply applied again, event by event.

Only for the prefork pool (the one with the semaphore); with any other pool nothing changes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.app import trace
from celery.worker.request import Request

from models.contracts import EVENTS
from models.settings import get_settings
from services.batch import TOGETHER
from tasks.events import apply_together
from workers.broker import rabbitmq
from workers.telemetry.hooks import count_outcome

log = logging.getLogger(__name__)

# The events services/batch.py knows how to apply together.
BATCHED_TASKS = frozenset(name for name, model in EVENTS.items() if model in TOGETHER)


def run_together(task_name: str, items: list[tuple[str, dict[str, Any]]]) -> list[str | None]:
    """In the pool process: apply the batch (task id, payload each); what is not applied is
    left to its own task."""
    started = time.monotonic()
    try:
        outcomes = apply_together(task_name, [payload for _, payload in items])
    except Exception:
        # Whatever it was, each event's own task run will meet it again and deal with it.
        log.exception(
            "a batch of %d %s events failed; each is run on its own", len(items), task_name
        )
        return [None] * len(items)
    applied = sum(outcome is not None for outcome in outcomes)
    if not applied:
        return outcomes
    log.info("%d of %d %s events applied together", applied, len(items), task_name)
    each = (time.monotonic() - started) / applied
    for (task_id, payload), outcome in zip(items, outcomes, strict=True):
        if outcome is None:
            continue
        count_outcome(task_name, "succeeded", each)
        # The line Celery logs for a task run, so a task id is found in the log as ever.
        trace.info(trace.LOG_SUCCESS, {
            "id": task_id, "name": task_name, "return_value": repr(outcome), "runtime": each,
            "args": "()", "kwargs": repr(payload),
        })  # fmt: skip
    return outcomes


class EventBatcher:
    """Stands in for the worker's on_task_request (its semaphore-guarded process_task)."""

    def __init__(self, consumer: Any, max_size: int) -> None:
        self._consumer = consumer
        self._worker = consumer.controller
        self._max_size = max_size
        # Ready requests waiting for a pool slot, by task name.
        self._waiting: dict[str, list[Request]] = {}
        # Requests let past the prefetch limit, with the QoS they were let past on.
        self._allowed: dict[str, Any] = {}
        # Of those, the other events waiting for a pool process (not to be batched).
        self._alone: set[str] = set()
        self._qos_seen: Any = None
        self._adjusts_qos = not rabbitmq.is_amqp(get_settings().broker_url)
        # Bumped when the connection is lost: a batch from before it settles nothing.
        self.generation = 0

    def __call__(self, request: Request) -> None:
        if not self._batchable(request):
            if request.name not in EVENTS:
                self._worker._process_task_sem(request)
                return
            # Another event (a notification between two adds) waits for a pool process like
            # any task; let one more message in meanwhile, or the adds behind it could never
            # gather. A few at most (a batch's worth), and only events: they are short.
            self._headroom()
            queued = not self._worker._quick_acquire(self._run_alone, request)
            if queued and len(self._alone) < self._max_size:
                self._alone.add(request.id)
                self._allow(request)
            return
        self._headroom()
        waiting = self._waiting.setdefault(request.name, [])
        waiting.append(request)
        if len(waiting) <= self._max_size:
            # Past a full batch the prefetch limit holds again: a backlog stays in the broker.
            self._allow(request)
        if len(waiting) == 1:
            # One slot asked for the lot: it is given at once when a pool process is free,
            # else when one finishes, and everything buffered by then goes.
            self._worker._quick_acquire(self._flush, request.name)

    def forget(self) -> None:
        """The connection is gone (Consumer.on_close): its messages will be delivered again."""
        self._waiting.clear()
        self._allowed.clear()
        self._alone.clear()
        self._qos_seen = None
        self.generation += 1

    def _batchable(self, request: Request) -> bool:
        # A retry keeps its own path: its countdown and its attempt count are its task's.
        return (
            request.name in BATCHED_TASKS
            and not request.request_dict.get("retries")
            and not request.args
        )

    def _allow(self, request: Request) -> None:
        """Let one more message in while this one waits or runs in a batch: prefetch counts
        unacknowledged messages, and with one per pool process a batch could never form.
        On RabbitMQ's quorum queues the prefetch is fixed per consumer: there a batch forms
        from what CLIENTFLOW_WORKER_PREFETCH_MULTIPLIER lets the worker hold."""
        if not self._adjusts_qos:
            return
        qos = self._consumer.qos
        qos.increment_eventually()
        self._allowed[request.id] = qos

    def _headroom(self) -> None:
        """One message more than the configured prefetch on each connection's QoS, so that
        one can be waiting for a pool process (where a batch starts) while all are busy."""
        if not self._adjusts_qos:
            return
        qos = self._consumer.qos
        if qos is not self._qos_seen:
            self._qos_seen = qos
            qos.increment_eventually()

    def release(self, request: Request) -> None:
        """The request is settled, or handed to the ordinary path: it counts as usual."""
        self._alone.discard(request.id)
        qos = self._allowed.pop(request.id, None)
        if qos is not None and qos is self._consumer.qos:
            qos.decrement_eventually()

    def _run_alone(self, request: Request) -> None:
        """Called holding one pool slot: running, it counts against the prefetch as usual."""
        self.release(request)
        self._worker._process_task(request)

    def on_its_own(self, request: Request) -> None:
        self.release(request)
        self._worker._process_task_sem(request)

    def _flush(self, task_name: str) -> None:
        """Called holding one pool slot."""
        waiting = self._waiting.pop(task_name, [])
        batch, rest = waiting[: self._max_size], waiting[self._max_size :]
        if rest:
            self._waiting[task_name] = rest
            self._worker._quick_acquire(self._flush, task_name)
        live = []
        for request in batch:
            if request.revoked():  # acknowledged and announced by revoked()
                self.release(request)
            else:
                live.append(request)
        if not live:
            self._worker._quick_release()
            return
        if len(live) == 1:
            self.release(live[0])
            self._worker._process_task(live[0])  # the slot held here is its
            return
        settle = _Settle(self, live)
        task = live[0].task
        self._worker.pool.apply_async(
            run_together,
            args=(task_name, [(request.id, request.kwargs) for request in live]),
            accept_callback=settle.accepted,
            timeout_callback=settle.timed_out,
            callback=settle.done,
            error_callback=settle.lost,
            soft_timeout=task.soft_time_limit,
            timeout=task.time_limit,
            correlation_id=live[0].id,
        )


class _Settle:
    """What becomes of each request of one batch job, once, whichever way the job ends."""

    def __init__(self, batcher: EventBatcher, requests: list[Request]) -> None:
        self._batcher = batcher
        self._generation = batcher.generation
        self._requests = requests
        self._started = time.monotonic()
        self._over = False

    def accepted(self, pid: int, time_accepted: float) -> None:
        for request in self._requests:
            # billiard gives the pid as an int; celery-types declares a str.
            request.on_accepted(pid, time_accepted)  # type: ignore[arg-type]

    def done(self, outcomes: list[str | None]) -> None:
        if self._end():
            return
        runtime = time.monotonic() - self._started
        for request, outcome in zip(self._requests, outcomes, strict=True):
            if outcome is None:
                self._batcher.on_its_own(request)
            else:
                self._batcher.release(request)
                request.on_success((False, outcome, runtime))

    def lost(self, exc_info: Any) -> None:
        # The pool process died (or the job could not be run): nothing of what it did is
        # relied on; each event is applied by its own task (a duplicate if already applied).
        if self._end():
            return
        log.warning(
            "a batch of %d events ended without a result (%s); each is run on its own",
            len(self._requests),
            getattr(exc_info, "exception", exc_info),
        )
        for request in self._requests:
            self._batcher.on_its_own(request)

    def timed_out(self, soft: bool, timeout: float) -> None:
        if soft:
            log.warning("a batch of %d events passed its soft time limit", len(self._requests))
            return
        self.lost(f"hard time limit ({timeout} s)")

    def _end(self) -> bool:
        """True when already settled, or when the connection it came on is gone (its
        messages are delivered again, and cannot be acknowledged on the new one)."""
        over, self._over = self._over, True
        return over or self._generation != self._batcher.generation


def install(consumer: Any) -> EventBatcher | None:
    """Put an EventBatcher in front of the consumer's on_task_request, where the pool takes
    one task per free process (prefork: the semaphore); before the strategies are made."""
    worker = consumer.controller
    process_task = getattr(worker, "_process_task_sem", None)
    size = get_settings().event_batch_size
    if process_task is None or consumer.on_task_request != process_task or size <= 1:
        return None
    batcher = EventBatcher(consumer, size)
    consumer.on_task_request = batcher
    return batcher
