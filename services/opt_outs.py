"""What a recipient may turn off, and the one-click unsubscribe link of each email it may.

A category the business requires (CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES) always reaches the
account holder: opting the holder out of one is refused, and its emails carry no link. Every
other email sent to a recipient because of a flag of its own (the holder's preference, a
contact's tick) carries List-Unsubscribe with a signed token naming that recipient and category
(models/contracts/unsubscribe_token.py), made here when the email is queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from models.contracts.unsubscribe_token import (
    InvalidToken,
    UnsubscribeClaims,
    sign_token,
    verify_token,
)
from services.errors import Rejected
from services.routing import Recipient


@dataclass(frozen=True)
class OptOutPolicy:
    """The settings' opt-out rules (tasks/policy.py builds it); the default is theirs unset."""

    required: frozenset[str] = frozenset()
    # "https://.../unsubscribe?token={token}"; empty: no List-Unsubscribe header.
    unsubscribe_url: str = ""
    # Empty: no token can be checked, so recipients.unsubscribe refuses every one. Kept out of
    # the repr, which logs and tracebacks may show.
    secret: bytes = field(default=b"", repr=False)
    token_lifetime_seconds: float = 90 * 86400
    clock: Callable[[], float] = time.time

    def refuse_holder_opt_out(self, categories: Iterable[str]) -> None:
        """Rejected when any of `categories` is one the holder may not turn off."""
        required = sorted(category for category in categories if category in self.required)
        if required:
            raise Rejected(
                f"{' and '.join(required)} emails are required by this business and always "
                "reach the account holder: they cannot be turned off "
                "(CLIENTFLOW_REQUIRED_EMAIL_CATEGORIES)"
            )

    def unsubscribe_link(self, client_id: str, recipient: Recipient, category: str) -> str | None:
        """The List-Unsubscribe URL of an email, or None where there must be none."""
        if not self.unsubscribe_url or not recipient.by_preference or category in self.required:
            return None
        claims = UnsubscribeClaims(
            kind=recipient.role,
            client_id=client_id,
            contact_id=recipient.contact_id,
            category=category,
            expires_at=int(self.clock() + self.token_lifetime_seconds),
        )
        # str.replace, not format(): the rest of the URL may hold braces of its own.
        return self.unsubscribe_url.replace("{token}", sign_token(claims, self.secret))

    def verified_claims(self, token: str) -> UnsubscribeClaims:
        """The claims of a token we signed and that has not expired; Rejected saying why not."""
        if not self.secret:
            raise Rejected(
                "this worker has no CLIENTFLOW_UNSUBSCRIBE_SECRET, so it cannot check "
                "unsubscribe tokens"
            )
        try:
            return verify_token(token, self.secret, self.clock())
        except InvalidToken as exc:
            raise Rejected(str(exc)) from exc


# What the settings give when none of them is set: nothing required, no links, no secret.
DEFAULT_OPT_OUTS = OptOutPolicy()
