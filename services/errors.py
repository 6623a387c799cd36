"""The two kinds of failure a handler can have (refused for good, or worth another try), and
an operator's look-up that can match nothing."""

from __future__ import annotations


class Rejected(Exception):
    """The event can never succeed as sent (bad input, unknown reference, not allowed).

    It is recorded with its reason and not retried.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownReference(Rejected):
    """Names a client or contact we do not have (yet).

    waiting_for ("client:<id>" / "contact:<id>") is set where the thing may still be on its
    way: the event is kept and released when it is added.
    """

    def __init__(self, reason: str, waiting_for: str | None = None) -> None:
        super().__init__(reason)
        self.waiting_for = waiting_for


class Forbidden(Rejected):
    pass


class Conflict(Rejected):
    pass


class Transient(Exception):
    """Worth retrying later: the world (database, broker, SMTP server) may recover."""


class BadFilter(ValueError):
    """A look-up value that can match nothing (an unknown status, template or client): refused,
    naming what it can be, rather than answered with an empty list that reads as "none".

    `name` is the filter's (status, template, client, text); the CLI names its option.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
