"""A run's counts: their empty shape, and adding one part (a batch, a chunk) to another."""

from __future__ import annotations

from typing import Any

from services.invoice_run.schedule import STAGES

GENERATE, NOTIFY = "generate", "notify"
# The passes of a run, in the order they run: notices only once every invoice is generated.
PASSES = (GENERATE, NOTIFY)

MAX_PROBLEMS_KEPT = 20


def new_counts() -> dict[str, Any]:
    return {
        "generated": 0,
        "notices": {notice.value: 0 for notice in STAGES},
        "skipped": 0,
        "no_recipient": 0,
        "emails": 0,
        # Invoices the notice pass could not handle (left for the next run), and the last
        # few reasons, so ops can see which and why.
        "unhandled": 0,
        "problems": [],
        "batches": {phase: 0 for phase in PASSES},
        # The most statements one batch's transaction sent, per pass.
        "queries_per_batch": {phase: 0 for phase in PASSES},
    }


# Counts that combine by taking the larger, not the sum.
MOST = frozenset({"queries_per_batch"})


def add_counts(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """`total` with `part` added in (a fresh structure: the JSON column compares by value to
    decide what to write, so an object changed in place would not be saved)."""
    summed = copy_counts(total)
    for key, value in part.items():
        if isinstance(value, dict):
            into = summed.setdefault(key, {})
            for inner, number in value.items():
                if key in MOST:
                    into[inner] = max(into.get(inner, 0), number)
                else:
                    into[inner] = into.get(inner, 0) + number
        elif isinstance(value, list):
            summed[key] = (summed.get(key, []) + value)[-MAX_PROBLEMS_KEPT:]
        else:
            summed[key] = summed.get(key, 0) + value
    return summed


def copy_counts(counts: dict[str, Any]) -> dict[str, Any]:
    return {
        k: dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
        for k, v in counts.items()
    }
