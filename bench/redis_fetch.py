"""What the reliable fetch costs: no-op tasks/s with it and with kombu's BRPOP, side by side.

    .venv/bin/python bench/redis_fetch.py [--tasks 5000] [--rounds 3] [--concurrency 2]

Starts a real `celery worker` on Redis for each mode in turn, rounds alternating (reliable,
kombu, reliable, kombu, ...) so the machine's noise falls on both alike, and times a burst of
Celery's built-in no-op task through each: published, consumed, run and acknowledged. Prints
tasks/s per round, the median per mode and the ratio. Also times the latency of single tasks
sent to an idle worker on each of its queues (the reliable fetch waits on one queue at a time).
Uses `$CLIENTFLOW_TEST_REDIS_URL` (default database 15), flushed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    NOOP_TASK,
    broker_idle,
    environ_without_settings,
    wait_until,
    worker,
)
from models.settings import Settings  # noqa: E402
from workers import migrate  # noqa: E402
from workers.app import create_app  # noqa: E402

MODES = {"reliable fetch": "true", "kombu BRPOP": "false"}


def one_round(
    redis_url: str, reliable: str, tasks: int, concurrency: int, log: Path
) -> tuple[float, float]:
    """(tasks/s for a burst, median seconds from send to acknowledged for a lone task)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = environ_without_settings()
    env.update(
        CLIENTFLOW_BROKER_URL=redis_url,
        CLIENTFLOW_DATA_DIR=str(log.parent),
        CLIENTFLOW_REDIS_RELIABLE_FETCH=reliable,
    )
    # The worker counts task outcomes in its (embedded SQLite) database.
    migrate.upgrade(Settings(data_dir=log.parent, database_url="").effective_database_url)
    app = create_app(Settings(broker_url=redis_url))
    queues = sorted(app.amqp.queues)
    try:
        with worker(env, concurrency, log, queues):
            wait_until(lambda: app.control.ping(timeout=0.5), "the worker to answer", 60)
            latencies = []
            for queue in queues * 5:
                time.sleep(0.3)  # idle: the worker is waiting again
                sent = time.perf_counter()
                app.send_task(NOOP_TASK, args=(1,), queue=queue)
                wait_until(lambda: broker_idle(client, queues), "a lone task", 30, 0.002)
                latencies.append(time.perf_counter() - sent)
            started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(tasks):
                    app.send_task(NOOP_TASK, args=(1,), producer=producer)
            wait_until(lambda: broker_idle(client, queues), "the burst", 600, 0.02)
            rate = tasks / (time.perf_counter() - started)
    finally:
        app.close()
        client.flushdb()
        client.close()
    return rate, statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CLIENTFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    args = parser.parse_args()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="clientflow-fetch-") as folder:
        for number in range(1, args.rounds + 1):
            for mode, flag in MODES.items():
                log = Path(folder) / f"worker-{number}-{flag}.log"
                rate, latency = one_round(args.redis_url, flag, args.tasks, args.concurrency, log)
                rates[mode].append(rate)
                latencies[mode].append(latency)
                print(f"round {number}  {mode:<15} {rate:8.0f} tasks/s   lone task "
                      f"{latency * 1000:6.1f} ms")  # fmt: skip
    reliable, kombu = (statistics.median(rates[mode]) for mode in MODES)
    lone_reliable, lone_kombu = (statistics.median(latencies[mode]) for mode in MODES)
    print(f"median tasks/s: reliable fetch {reliable:.0f}, kombu BRPOP {kombu:.0f}; "
          f"ratio reliable : kombu = {reliable / kombu:.2f}")  # fmt: skip
    print(f"median lone-task latency: reliable fetch {lone_reliable * 1000:.1f} ms, "
          f"kombu BRPOP {lone_kombu * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
