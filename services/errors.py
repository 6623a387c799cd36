"""The two kinds of failure a handler can have: refused for good, or worth another try."""

from __future__ import annotations


class Rejected(Exception):
    """The event can never succeed as sent (bad input, unknown reference, not allowed).

    It is recorded with its reason and not retried.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownReference(Rejected):
    pass


class Forbidden(Rejected):
    pass


class Conflict(Rejected):
    pass


class Transient(Exception):
    """Worth retrying later: the world (database, broker, SMTP server) may recover."""
