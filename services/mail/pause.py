"""A pause on delivering inside event tasks after the mail server failed to answer."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Pause:
    """Off until start(); then on for `seconds`. One per process: its own failures only."""

    seconds: float
    until: float = 0.0

    def active(self) -> bool:
        return time.monotonic() < self.until

    def start(self) -> None:
        self.until = time.monotonic() + self.seconds
