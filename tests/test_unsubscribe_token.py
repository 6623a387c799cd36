"""The unsubscribe token: signed and verified (HMAC-SHA256), URL-safe, refused with a reason
when malformed, forged, expired or naming what it may not; and the links made from it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import pytest
from opt_out_kit import NOW, SECRET, URL, policy, token_of

from models.contracts.unsubscribe_token import (
    PURPOSE,
    InvalidToken,
    UnsubscribeClaims,
    read_client_id,
    sign_token,
    verify_token,
)
from services.errors import Rejected
from services.routing import Recipient

HOLDER = UnsubscribeClaims("holder", "C1", None, "general", int(NOW) + 3600)
CONTACT = UnsubscribeClaims("contact", "C.1:x-y_z", "K1", "support", int(NOW) + 3600)
LATER = HOLDER.expires_at
FORGED = "signature does not match: it was altered, forged, or signed with another secret"


def _claims_part(fields: Any) -> str:
    text = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _with_claims(token: str, fields: list[Any]) -> str:
    """The token with other claims and its original signature (what a forger can make)."""
    return f"{_claims_part(fields)}.{token.partition('.')[2]}"


def _signed(fields: Any, secret: bytes = SECRET) -> str:
    """Claims of any shape signed as the format says (what only a bug of ours could make)."""
    claims = _claims_part(fields)
    mac = hmac.new(secret, PURPOSE + claims.encode(), hashlib.sha256).digest()
    return f"{claims}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_the_token_is_the_documented_format() -> None:
    fields = [1, "holder", "C1", None, "general", HOLDER.expires_at]
    assert sign_token(HOLDER, SECRET) == _signed(fields)


@pytest.mark.parametrize("claims", [HOLDER, CONTACT])
def test_a_token_verifies_to_the_claims_it_was_signed_with(claims: UnsubscribeClaims) -> None:
    token = sign_token(claims, SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token), token
    assert verify_token(token, SECRET, NOW) == claims
    assert read_client_id(token) == claims.client_id


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: _with_claims(t, [1, "holder", "C2", None, "general", LATER]),
                     id="client"),
        pytest.param(lambda t: _with_claims(t, [1, "holder", "C1", None, "invoice", LATER]),
                     id="category"),
        pytest.param(lambda t: _with_claims(t, [1, "holder", "C1", None, "general", 9**11]),
                     id="expiry"),
        pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="signature"),
        pytest.param(lambda t: sign_token(HOLDER, b"x" * 32), id="another-secret"),
    ],
)  # fmt: skip
def test_a_forged_or_altered_token_is_refused(tamper: Any) -> None:
    forged = tamper(sign_token(HOLDER, SECRET))
    with pytest.raises(InvalidToken, match=FORGED):
        verify_token(forged, SECRET, NOW)


def test_an_expired_token_is_refused_saying_when_it_expired() -> None:
    token = sign_token(HOLDER, SECRET)
    assert verify_token(token, SECRET, HOLDER.expires_at - 1) == HOLDER
    with pytest.raises(InvalidToken, match=r"expired at 2026-11-30 01:00:00 UTC"):
        verify_token(token, SECRET, HOLDER.expires_at)


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a" * 10 + "." + "b" * 42, "a.b.c", "é." + "A" * 43, "x" * 600]
)
def test_a_malformed_token_is_refused_and_names_no_client(token: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        verify_token(token, SECRET, NOW)
    assert read_client_id(token) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([1, "holder", "C1", None, "billing", 9**9], "unknown email category 'billing'"),
        ([1, "holder", "C1", None, ["general"], 9**9], "unknown email category"),
        ([1, "admin", "C1", None, "general", 9**9], "names no holder or contact"),
        ([1, "holder", "C1", "K1", "general", 9**9], "names no holder or contact"),
        ([1, "contact", "C1", None, "general", 9**9], "names no holder or contact"),
        ([1, "holder", "C1", None, "general", "soon"], "carries no expiry"),
        ([2, "holder", "C1", None, "general", 9**9], "not of format version 1"),
        ({"client": "C1"}, "not of format version 1"),
    ],
)
def test_signed_claims_of_the_wrong_shape_are_refused(fields: Any, reason: str) -> None:
    with pytest.raises(InvalidToken, match=re.escape(reason)):
        verify_token(_signed(fields), SECRET, NOW)


def test_a_link_is_made_for_an_email_its_recipient_may_turn_off() -> None:
    holder = Recipient(name="Ada", email="ada@example.com", role="holder")
    contact = Recipient(name="K", email="k@example.com", role="contact", contact_id="K1")
    opt_outs = policy("invoice", now=NOW)

    link = opt_outs.unsubscribe_link("C1", contact, "support")
    assert link is not None
    assert link.startswith("https://billing.example.com/unsubscribe?token=")
    claims = verify_token(token_of(link), SECRET, NOW)
    assert claims == UnsubscribeClaims("contact", "C1", "K1", "support", int(NOW) + 90 * 86400)
    link = opt_outs.unsubscribe_link("C1", holder, "general")
    assert link is not None
    assert verify_token(token_of(link), SECRET, NOW).kind == "holder"


def test_no_link_without_a_url_for_a_required_category_or_a_role() -> None:
    holder = Recipient(name="Ada", email="ada@example.com", role="holder")
    billing = Recipient("B", "b@example.com", "contact", "KB", by_preference=False)
    assert policy(url="").unsubscribe_link("C1", holder, "general") is None
    assert policy("general").unsubscribe_link("C1", holder, "general") is None
    assert policy().unsubscribe_link("C1", billing, "invoice") is None
    assert policy().unsubscribe_link("C1", holder, "invoice") is not None


def test_a_policy_checks_tokens_with_its_secret_and_clock() -> None:
    token = sign_token(HOLDER, SECRET)
    assert policy(now=NOW).verified_claims(token) == HOLDER
    with pytest.raises(Rejected, match="expired"):
        policy(now=HOLDER.expires_at + 1).verified_claims(token)
    with pytest.raises(Rejected, match="no CLIENTFLOW_UNSUBSCRIBE_SECRET"):
        policy(url="", secret=b"").verified_claims(token)


def test_a_url_template_with_braces_of_its_own_keeps_them() -> None:
    template = URL.replace("?", "/{campaign}?")
    holder = Recipient(name="Ada", email="ada@example.com", role="holder")
    link = policy(url=template).unsubscribe_link("C1", holder, "general")
    assert link is not None
    assert link.startswith("https://billing.example.com/unsubscribe/{campaign}?token=")


def test_the_secret_is_not_in_the_policys_repr() -> None:
    assert repr(SECRET) not in repr(policy())
    assert "secret" not in repr(policy())
