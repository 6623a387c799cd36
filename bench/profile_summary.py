"""Summarise a py-spy raw (collapsed stacks) profile of a Celery worker's pool processes.

    .venv/bin/python bench/run.py --quick --only clients_add --profile-clients-add /tmp/p.raw
    .venv/bin/python bench/profile_summary.py /tmp/p.raw [--top 15] [--below FRAME ...]

py-spy's `record --subprocesses --format raw` writes one line per distinct stack, root first,
frames joined by ";" (the first ones naming the process: the worker, then the pool process
forked from it), then the number of samples. This keeps the pool processes (those running
billiard's `workloop`) and in them the thread that runs it, cuts each stack at the first frame
matching one of --below (by default Celery's `trace_task`, where a task's own work starts,
and workers/batching.py's `run_together`, where a batch of events is applied outside any
task's trace; samples outside both are the pool waiting for work or talking to its parent),
and lists the functions with the most
samples: by own+child time (the function anywhere in the stack, counted once per stack) and by
own time (the function at the top). Line numbers are dropped, so a function is one entry.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
POOL_MARK = "workloop (billiard/pool.py"  # the loop each pool process runs tasks in


@dataclass
class Profile:
    """Samples of the pool processes: in total, outside the cut frame, and per function."""

    processes: dict[str, int] = field(default_factory=dict)  # pool process -> samples
    samples: int = 0
    outside: int = 0  # pool samples with no frame matching --below
    # Samples of a pool process's other threads (the task outcome buffer's flush timer,
    # waiting): py-spy merges threads, and counts this one though it sleeps.
    other_threads: int = 0
    total: Counter[str] = field(default_factory=Counter)  # own + child
    own: Counter[str] = field(default_factory=Counter)


def function(frame: str) -> str:
    """'Session.execute (sqlalchemy/orm/session.py:2351)' -> without the line number."""
    return _LINE.sub(")", frame)


# Where a task's own work starts in a pool process: a task, or a batch of events.
WORK_STARTS = ("trace_task (celery/app/trace.py", "run_together (workers/batching.py")


def parse(path: Path, below: tuple[str, ...]) -> Profile:
    stacks: dict[str, list[tuple[list[str], int]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        # Leading "process PID:cmdline" frames: the worker, then the pool process under it.
        frames = stack.split(";")
        process = ""
        while frames and frames[0].startswith("process "):
            process = frames.pop(0).split(":", 1)[0]
        stacks[process].append((frames, int(number)))
    profile = Profile()
    for process, found in stacks.items():
        if not any(POOL_MARK in frame for frames, _ in found for frame in frames):
            continue  # the worker's main process (the consumer), not a pool process
        profile.processes[process] = 0
        for frames, count in found:
            if not any(POOL_MARK in frame for frame in frames):
                profile.other_threads += count
                continue
            profile.processes[process] += count
            profile.samples += count
            if below:
                cut = next(
                    (i for i, f in enumerate(frames) if any(mark in f for mark in below)), None
                )
                if cut is None:
                    profile.outside += count
                    continue
                frames = frames[cut:]
            names = [function(f) for f in frames]
            for name in set(names):
                profile.total[name] += count
            if names:
                profile.own[names[-1]] += count
    return profile


def report(profile: Profile, top: int, below: tuple[str, ...]) -> str:
    if not profile.samples:
        return "no pool-process samples found"
    out = [
        f"pool processes: {', '.join(f'{p} ({n:,} samples)' for p, n in profile.processes.items())}"
    ]
    if profile.other_threads:
        out.append(
            f"left out: {profile.other_threads:,} samples of their other threads (not in "
            "billiard's workloop; the outcome buffer's flush timer sleeps in one)"
        )
    if below:
        inside = profile.samples - profile.outside
        where = " or ".join(mark.split(" (")[0] for mark in below)
        out.append(
            f"inside {where}: {inside:,} of {profile.samples:,} samples "
            f"({inside / profile.samples:.0%}); the rest is the pool waiting for work or "
            "talking to its parent. Percentages below are of all pool samples."
        )
    for title, counter in (("own+child", profile.total), ("own", profile.own)):
        out.append(f"\ntop {top} by {title} time:")
        for rank, (name, count) in enumerate(counter.most_common(top), 1):
            out.append(f"{rank:>3}. {count / profile.samples:6.1%} {count:>7,}  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--below",
        nargs="*",
        default=list(WORK_STARTS),
        help="cut stacks at the first frame containing one of these (none: whole stacks)",
    )
    args = parser.parse_args()
    below = tuple(mark for mark in args.below if mark)
    print(report(parse(args.raw, below), args.top, below))


if __name__ == "__main__":
    main()
