"""How the chunks a run plans reach whoever runs them: as tasks for any worker, published
after the commit that records them, or kept for the process that planned them."""

from __future__ import annotations

from functools import partial
from typing import Protocol

from models.ops import ScheduledRunChunk
from services import outbox
from services.db import SessionFactory, UnitOfWork
from services.invoice_run.chunks import ChunkKey
from services.outbox import Publish

CHUNK_TASK = "invoices.run_chunk"


class Handoff(Protocol):
    def __call__(self, uow: UnitOfWork, chunks: list[ScheduledRunChunk]) -> None:
        """Called inside the transaction that adds the chunks, before its commit."""


def to_workers(session_factory: SessionFactory, publish: Publish) -> Handoff:
    """One task per chunk, staged in the outbox with the chunk rows and published after the
    commit: a worker never takes a chunk whose row it cannot see yet, and a broker that is
    away then gets the tasks from the outbox relay later instead of losing them."""

    def handoff(uow: UnitOfWork, chunks: list[ScheduledRunChunk]) -> None:
        staged = [
            outbox.stage(uow.session, CHUNK_TASK, ChunkKey.of(chunk).as_kwargs())
            for chunk in chunks
        ]
        uow.session.flush()
        ids = [message.id for message in staged]
        uow.after_commit(partial(outbox.publish_staged, session_factory, ids, publish))

    return handoff


def kept_here(uow: UnitOfWork, chunks: list[ScheduledRunChunk]) -> None:
    """The in-process run (run.run_invoices) takes its pending chunks itself, in order."""
