"""bench/profile_summary.py: a pool process's other threads are not counted as its work
(pure parsing of a py-spy raw profile; the profiles themselves come from make bench)."""

from __future__ import annotations

from pathlib import Path

from bench.profile_summary import WORK_STARTS, parse, report

WORKER = "process 10:celery worker"
POOL = "process 11:celery worker"
LOOP = "Worker.workloop (billiard/pool.py:351)"
BATCH = "run_together (workers/batching.py:44)"
RAW = "\n".join(
    [
        f"{WORKER};Hub.create_loop (kombu/asynchronous/hub.py:300) 50",
        f"{WORKER};{POOL};{LOOP};{BATCH};commit (services/db.py:86) 30",
        f"{WORKER};{POOL};{LOOP};receive (billiard/pool.py:400) 10",
        # The outcome buffer's flush timer, asleep: another thread of the same pool process.
        f"{WORKER};{POOL};Timer.run (threading.py:1428);Event.wait (threading.py:629) 60",
    ]
)


def test_a_pool_processs_other_threads_are_left_out(tmp_path: Path) -> None:
    raw = tmp_path / "profile.raw"
    raw.write_text(RAW + "\n")

    profile = parse(raw, WORK_STARTS)

    assert profile.processes == {"process 11": 40}
    assert (profile.samples, profile.outside, profile.other_threads) == (40, 10, 60)
    assert profile.own["commit (services/db.py)"] == 30
    text = report(profile, 5, WORK_STARTS)
    assert "left out: 60 samples of their other threads" in text
    assert "inside trace_task or run_together: 30 of 40 samples (75%)" in text
