"""workers/batching.py's EventBatcher against the real semaphore and QoS it works with (kombu's),
with a recording pool and requests: what waits, what goes together, and what becomes of each
request whichever way its batch ends. tests/test_batching.py drives it in a real worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kombu.asynchronous.semaphore import LaxBoundedSemaphore
from kombu.common import QoS

from models.settings import get_settings
from workers.batching import EventBatcher, install, run_together

PREFETCH = 2


class FakeRequest:
    def __init__(self, name: str, number: int, retries: int = 0) -> None:
        self.name = name
        self.id = f"{name}-{number}"
        self.request_dict = {"retries": retries}
        self.args: list[Any] = []
        self.kwargs = {"number": number}
        self.task = SimpleNamespace(soft_time_limit=60, time_limit=300)
        self.is_revoked = False
        self.settled: list[tuple[str, Any]] = []

    def revoked(self) -> bool:
        return self.is_revoked

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        self.settled.append(("accepted", pid))

    def on_success(self, failed_retval_runtime: tuple[bool, Any, float]) -> None:
        self.settled.append(("success", failed_retval_runtime[1]))


class FakePool:
    def __init__(self) -> None:
        self.jobs: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def apply_async(self, target: Any, args: tuple[Any, ...], **options: Any) -> None:
        self.jobs.append((target, args, options))


class FakeWorker:
    """The parts of Celery's WorkController the batcher uses: its semaphore (one slot per pool
    process), process_task with and without it, and the pool."""

    def __init__(self, slots: int) -> None:
        self.semaphore = LaxBoundedSemaphore(slots)
        self._quick_acquire = self.semaphore.acquire
        self._quick_release = self.semaphore.release
        self.pool = FakePool()
        self.ran: list[str] = []  # requests sent to the pool on their own

    def _process_task(self, request: FakeRequest) -> None:
        self.ran.append(request.id)

    def _process_task_sem(self, request: FakeRequest) -> None:
        self._quick_acquire(self._process_task, request)

    def busy(self) -> None:
        """Every pool process taken."""
        while self.semaphore.value:
            self._quick_acquire(lambda: None)


@pytest.fixture
def worker() -> FakeWorker:
    return FakeWorker(slots=2)


@pytest.fixture
def consumer(worker: FakeWorker) -> SimpleNamespace:
    return SimpleNamespace(controller=worker, qos=QoS(lambda **_: None, PREFETCH))


def batcher(consumer: SimpleNamespace, size: int = 3) -> EventBatcher:
    return EventBatcher(consumer, size)


# Any: EventBatcher is typed for Celery's Request, which these stand in for.
def flushed(take: EventBatcher, worker: FakeWorker, batch: list[Any]) -> dict[str, Any]:
    """Have a busy pool's waiting batch leave as one job; its callbacks. The job's slot and
    the other process's are free again after (the job ended; the other one too)."""
    worker.busy()
    for request in batch:
        take(request)
    worker._quick_release()
    [(_, _, job)] = worker.pool.jobs
    worker._quick_release()
    worker._quick_release()
    return job


def adds(count: int, start: int = 0) -> list[Any]:
    return [FakeRequest("clients.add", n) for n in range(start, start + count)]


def test_an_idle_worker_runs_each_event_at_once_on_its_own(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    take = batcher(consumer)
    for request in adds(2):
        take(request)
    assert worker.ran == ["clients.add-0", "clients.add-1"]
    assert worker.pool.jobs == []


def test_events_waiting_for_a_busy_pool_leave_together_when_a_process_frees(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    take = batcher(consumer, size=3)
    worker.busy()
    waiting = adds(5)
    for request in waiting:
        take(request)
    assert worker.ran == []
    # One message more than the prefetch (the headroom), and one per waiting event up to a
    # batch: past that the prefetch limit holds and the backlog stays in the broker.
    assert consumer.qos.value == PREFETCH + 1 + 3

    worker._quick_release()  # a pool process finishes

    [(target, args, options)] = worker.pool.jobs
    assert target is run_together
    assert args == (
        "clients.add",
        [(f"clients.add-{n}", {"number": n}) for n in range(3)],
    )
    assert (options["soft_timeout"], options["timeout"]) == (60, 300)
    worker._quick_release()  # another one: the two left go together too
    assert worker.pool.jobs[1][1] == (
        "clients.add",
        [("clients.add-3", {"number": 3}), ("clients.add-4", {"number": 4})],
    )


def test_each_request_of_a_batch_is_settled_by_its_outcome(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    batch = adds(3)
    job = flushed(batcher(consumer, size=3), worker, batch)
    job["accept_callback"](4242, 0.0)

    job["callback"](["applied", None, "applied"])

    assert batch[0].settled == [("accepted", 4242), ("success", "applied")]
    assert batch[2].settled == [("accepted", 4242), ("success", "applied")]
    # Left by the batch: its own task run, through the ordinary path.
    assert batch[1].settled == [("accepted", 4242)]
    assert worker.ran == ["clients.add-1"]
    # Settled or handed on, none is let past the prefetch any more.
    assert consumer.qos.value == PREFETCH + 1


def test_a_batch_whose_process_died_has_every_event_run_on_its_own(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    job = flushed(batcher(consumer, size=2), worker, adds(2))

    job["error_callback"](SimpleNamespace(exception="WorkerLostError"))
    job["callback"](["applied"] * 2)  # a late result changes nothing: settled once

    assert sorted(worker.ran) == ["clients.add-0", "clients.add-1"]


def test_a_batch_past_its_hard_time_limit_has_every_event_run_on_its_own(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    job = flushed(batcher(consumer, size=2), worker, adds(2))

    job["timeout_callback"](True, 60)  # the soft limit: nothing yet
    assert worker.ran == []
    job["timeout_callback"](False, 300)
    assert sorted(worker.ran) == ["clients.add-0", "clients.add-1"]


def test_a_batch_from_before_a_lost_connection_settles_nothing(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    take = batcher(consumer, size=2)
    batch = adds(2)
    job = flushed(take, worker, batch)

    take.forget()  # Consumer.on_close: the broker delivers these messages again
    job["callback"](["applied", None])

    assert [r.settled for r in batch] == [[], []]
    assert worker.ran == []


def test_retries_other_tasks_and_other_events_are_never_batched(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    take = batcher(consumer, size=3)
    worker.busy()
    retry: Any = FakeRequest("clients.add", 1, retries=1)
    delivery: Any = FakeRequest("emails.deliver", 2)
    notification: Any = FakeRequest("notifications.send", 3)
    for request in (retry, delivery, notification):
        take(request)
    # Waiting for a pool process as any task does; the events (not emails.deliver) let one
    # more message in meanwhile, so adds behind them can still gather.
    assert consumer.qos.value == PREFETCH + 1 + 2

    for _ in range(3):
        worker._quick_release()

    assert worker.ran == [retry.id, delivery.id, notification.id]
    assert worker.pool.jobs == []
    assert consumer.qos.value == PREFETCH + 1


def test_revoked_events_are_dropped_from_a_batch(
    worker: FakeWorker, consumer: SimpleNamespace
) -> None:
    take = batcher(consumer, size=3)
    worker.busy()
    batch = adds(3)
    for request in batch:
        take(request)
    batch[0].is_revoked = batch[1].is_revoked = True

    worker._quick_release()

    # One left: it runs on its own, in the slot the batch was given.
    assert worker.ran == ["clients.add-2"]
    assert worker.pool.jobs == []


@pytest.fixture
def batch_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    def set_size(size: int) -> None:
        monkeypatch.setenv("CLIENTFLOW_EVENT_BATCH_SIZE", str(size))
        get_settings.cache_clear()

    yield set_size
    get_settings.cache_clear()  # the next reader sees the environment as it was


def test_install_stands_in_front_of_the_prefork_pools_semaphore(
    worker: FakeWorker, batch_size: Callable[[int], None]
) -> None:
    batch_size(64)
    consumer = SimpleNamespace(controller=worker, on_task_request=worker._process_task_sem)
    batcher_installed = install(consumer)
    assert isinstance(batcher_installed, EventBatcher)
    assert consumer.on_task_request is batcher_installed


def test_install_changes_nothing_without_the_semaphore_or_with_a_size_of_one(
    worker: FakeWorker, batch_size: Callable[[int], None]
) -> None:
    batch_size(64)
    # Pools without the semaphore (threads, solo) take tasks straight to _process_task.
    unguarded = SimpleNamespace(controller=worker, on_task_request=worker._process_task)
    assert install(unguarded) is None
    assert unguarded.on_task_request == worker._process_task
    batch_size(1)
    guarded = SimpleNamespace(controller=worker, on_task_request=worker._process_task_sem)
    assert install(guarded) is None
    assert guarded.on_task_request == worker._process_task_sem
