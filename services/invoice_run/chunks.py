"""A run's chunks: their key and their states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.ops import ScheduledRunChunk

PENDING, DONE, FAILED = "pending", "done", "failed"


@dataclass(frozen=True)
class ChunkKey:
    run_id: int
    phase: str
    seq: int

    @classmethod
    def of(cls, chunk: ScheduledRunChunk) -> ChunkKey:
        return cls(chunk.run_id, chunk.phase, chunk.seq)

    def as_kwargs(self) -> dict[str, Any]:
        """The chunk task's arguments: the key only; the task reads its range from the row."""
        return {"run_id": self.run_id, "phase": self.phase, "seq": self.seq}

    def where(self) -> tuple[Any, ...]:
        return (
            ScheduledRunChunk.run_id == self.run_id,
            ScheduledRunChunk.phase == self.phase,
            ScheduledRunChunk.seq == self.seq,
        )

    def __str__(self) -> str:
        return f"chunk {self.phase} {self.seq} of run {self.run_id}"
