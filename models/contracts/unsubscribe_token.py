"""The token of a one-click unsubscribe link: whose mail (the holder's or a contact's), which
category, until when, signed so that only clientflow can have issued it.

    <claims>.<signature>

`claims` is base64url (unpadded) of the compact JSON array
`[1, kind, client_id, contact_id, category, expires_at]`: the format version, "holder" or
"contact", the client id, the contact id (null for the holder), the category and the expiry
in Unix seconds. `signature` is base64url of HMAC-SHA256, keyed with the unsubscribe secret,
over PURPOSE followed by `claims` as written. Both parts use only `A-Za-z0-9-_` (and the dot
between them), so the token goes into a URL as it is.

Anyone holding the link can read the claims (they name nothing but the recipient's own ids);
only the signature makes them believable, and it is checked before anything else is looked at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from models.contracts.common import Category

TOKEN_VERSION = 1
# Keys the MAC to this one use: the secret can sign nothing else that would pass for a token.
PURPOSE = b"clientflow-unsubscribe-v1."
# Two 64-character ids, a category and an expiry come to about 370 characters.
MAX_TOKEN_CHARS = 512
_SHAPE = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$")
_CATEGORIES = frozenset(category.value for category in Category)

RecipientKind = Literal["holder", "contact"]


class InvalidToken(ValueError):
    """A token that cannot be taken; its message is the reason recorded with the refusal."""


@dataclass(frozen=True)
class UnsubscribeClaims:
    kind: RecipientKind
    client_id: str
    contact_id: str | None  # None for the holder
    category: str
    expires_at: int  # Unix seconds

    def expiry_text(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(claims_text: str, secret: bytes) -> str:
    mac = hmac.new(secret, PURPOSE + claims_text.encode("ascii"), hashlib.sha256)
    return _encode(mac.digest())


def sign_token(claims: UnsubscribeClaims, secret: bytes) -> str:
    fields = [
        TOKEN_VERSION, claims.kind, claims.client_id, claims.contact_id, claims.category,
        claims.expires_at,
    ]  # fmt: skip
    text = _encode(json.dumps(fields, separators=(",", ":")).encode())
    return f"{text}.{_signature(text, secret)}"


def _fields(claims_text: str) -> object:
    """The decoded claims, unverified; None when they are not base64url JSON."""
    try:
        raw = base64.urlsafe_b64decode(claims_text + "=" * (-len(claims_text) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        return None


def read_client_id(token: object) -> str | None:
    """The client a token names, NOT verified: only for filling in the event's client_id, which
    the handler checks against the verified claims. None when it cannot be read."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    shape = _SHAPE.match(token)
    fields = _fields(shape.group(1)) if shape else None
    if isinstance(fields, list) and len(fields) > 2 and isinstance(fields[2], str):
        return fields[2]
    return None


def verify_token(token: str, secret: bytes, now: float) -> UnsubscribeClaims:
    """The claims of a token clientflow signed with `secret` that has not expired at `now`.

    Raises InvalidToken saying why not: malformed, not signed by us, or expired.
    """
    shape = _SHAPE.match(token) if len(token) <= MAX_TOKEN_CHARS else None
    if shape is None:
        raise InvalidToken("unsubscribe token is malformed: not <claims>.<signature> in base64url")
    claims_text, signature = shape.groups()
    if not hmac.compare_digest(signature, _signature(claims_text, secret)):
        raise InvalidToken(
            "unsubscribe token's signature does not match: it was altered, forged, or signed "
            "with another secret"
        )
    claims = _claims(_fields(claims_text))
    if now >= claims.expires_at:
        raise InvalidToken(
            f"unsubscribe token expired at {claims.expiry_text()}: the link in a newer email, "
            "or the client area, can still turn this category off"
        )
    return claims


def _claims(fields: object) -> UnsubscribeClaims:
    """Claims we signed ourselves; checked all the same, as a future format could differ."""
    if not (isinstance(fields, list) and len(fields) == 6 and fields[0] == TOKEN_VERSION):
        raise InvalidToken(f"unsubscribe token is not of format version {TOKEN_VERSION}")
    _, kind, client_id, contact_id, category, expires_at = fields
    holder = kind == "holder" and contact_id is None
    contact = kind == "contact" and isinstance(contact_id, str) and contact_id != ""
    if not (holder or contact) or not isinstance(client_id, str) or not client_id:
        raise InvalidToken("unsubscribe token names no holder or contact of a client")
    if not isinstance(category, str) or category not in _CATEGORIES:
        raise InvalidToken(f"unsubscribe token names an unknown email category {category!r}")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise InvalidToken("unsubscribe token carries no expiry")
    return UnsubscribeClaims(kind, client_id, contact_id, category, expires_at)
