"""Field types and the envelope every event shares: event_id, actor, and strict validation."""

from __future__ import annotations

import datetime as dt
import functools
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

import pycountry
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)

from models.contracts.version import newer_version_problem

# C0/C1 control characters and the Unicode line and paragraph separators: any of them in a
# value that reaches a header would let a publisher inject headers, and Python's email package
# refuses to write such a header at all (which used to fail a whole delivery batch).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Notes are the one multi-line field; they may keep newlines and tabs, nothing else.
_CONTROL_EXCEPT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
# Dates outside these bounds are data errors upstream, and near the end of Python's calendar
# the invoice run's date arithmetic overflows (9999-12-31 + a reminder's lead time).
EARLIEST_DATE = dt.date(1970, 1, 1)
LATEST_DATE = dt.date(2199, 12, 31)
# How deeply a JSON value (a notification's context) may nest. Deep nesting is never data a
# template needs, and past a few hundred levels Python's JSON and pickle recurse to death.
MAX_JSON_DEPTH = 16


def _single_line(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must be a single line without control characters (CR, LF, ...)")
    return value


def _multi_line(value: str) -> str:
    if _CONTROL_EXCEPT_NEWLINES.search(value):
        raise ValueError("must not contain control characters other than newlines and tabs")
    return value


def _bounded_date(value: dt.date) -> dt.date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


# A mailbox in plain ASCII, as sendable_address gives one back: an RFC 5321 dot-atom local
# part at a domain of lower-case LDH labels, at most 254 characters (RFC 5321's path, less its
# angle brackets). sendable_address returns such an address as it is, or refuses it (a domain
# email-validator knows is not for mail, such as .test): a mailbox it can be sent to as it is.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_MAILBOX = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
_MAX_ADDRESS = 254


def plain_ascii_mailbox(address: str) -> bool:
    return len(address) <= _MAX_ADDRESS and _PLAIN_MAILBOX.fullmatch(address) is not None


# Cached: a pure function of the text (no DNS: check_deliverability is off), asked again for
# the same mailboxes on every event that names them and on every email sent to them
# (services.mail.compose); email-validator's parse was 5 % of a notification's CPU. A refusal
# raises, so it is not cached and says why each time.
@functools.lru_cache(maxsize=4096)
def sendable_address(value: str) -> str:
    """The address as SMTP will carry it: the domain in its ASCII (IDNA) form, one spelling
    per mailbox so uniqueness checks in Python and in PostgreSQL agree. Mail goes out without
    SMTPUTF8, so the part before the @ must be ASCII. ValueError says why it cannot be."""
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"cannot be sent to: {exc}") from exc
    return str(checked.ascii_email)


def sendable_form(address: str) -> str:
    """sendable_address, without its parse where the address is a plain ASCII mailbox (its
    own sendable form): for an address just parsed by EmailStr (the Email type; the second
    parse was 3 % of a pool process's time in the clients.add profile), and for one the
    contracts stored (services.mail.compose: a delivery to thousands of addresses each seen
    once misses sendable_address's cache every time, 4 % of the notifications.send profile;
    bench/README.md, twelfth session). Anything else (a row logged before addresses were
    stored so, with a Unicode domain) is parsed as before."""
    return address if plain_ascii_mailbox(address) else sendable_address(address)


def json_depth(value: Any) -> int:
    """How many arrays and objects deep `value` nests, counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def _currency(value: str) -> str:
    code = value.upper()
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code")
    return code


def _country(value: str) -> str:
    code = value.upper()
    if pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return code


Id = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_single_line),
]
Company = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_single_line),
]
Address = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_single_line),
]
Short = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_single_line),
]
Postcode = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=20),
    AfterValidator(_single_line),
]
Country = Annotated[str, StringConstraints(min_length=2, max_length=2), AfterValidator(_country)]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=32, pattern=r"^[0-9+().\- ]{3,32}$")
]
TaxId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_single_line),
]
Language = Annotated[
    str, StringConstraints(min_length=2, max_length=32, pattern=r"^[a-z][a-z_-]*$")
]
# A product name or an invoice line: one line, longer than a name.
Line = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_single_line),
]
Notes = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_multi_line)]


Email = Annotated[EmailStr, StringConstraints(max_length=254), AfterValidator(sendable_form)]
Date = Annotated[dt.date, AfterValidator(_bounded_date)]


def _known_version(value: int) -> int:
    problem = newer_version_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# Strict: a version is a JSON integer, never "2", 2.0 or true.
ContractVersion = Annotated[int, Strict(), Field(ge=1), AfterValidator(_known_version)]

# Invoices the run generates are named "auto:<service id>:<yyyymmdd>" (see models/billing.py).
InvoiceId = Annotated[
    str, StringConstraints(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
Currency = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_currency)]
# Decimal strings ("12.50") or JSON numbers; a float whose binary value needs more than two
# decimals (0.1 + 0.2) is refused rather than rounded, so no amount changes on the way in.
Money = Annotated[Decimal, Field(max_digits=12, decimal_places=2, allow_inf_nan=False)]


class Category(StrEnum):
    """The five WHMCS email categories a contact can be ticked for."""

    GENERAL = "general"
    PRODUCT = "product"
    DOMAIN = "domain"
    INVOICE = "invoice"
    SUPPORT = "support"


class Contract(BaseModel):
    """Strict: unknown fields are refused, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Contract):
    kind: Literal["admin", "client", "system"] = "system"
    client_id: Id | None = None

    @model_validator(mode="after")
    def _client_needs_id(self) -> Actor:
        if self.kind == "client" and self.client_id is None:
            raise ValueError("a client actor must carry client_id")
        return self


# The fields every event carries. Handlers leave them out when they copy an event's fields
# onto a record, so a new envelope field is named here once, not in every handler.
ENVELOPE_FIELDS = frozenset({"event_id", "actor", "client_id", "contract_version"})


class Event(Contract):
    event_id: EventId = Field(description="The publisher's idempotency key for this event.")
    actor: Actor = Field(default_factory=Actor, description="Who asked; default system.")
    client_id: Id = Field(description="The client the event is about.")
    contract_version: ContractVersion | None = Field(
        default=None,
        description=(
            "The contract version the event was written against (optional). A worker refuses "
            "an event newer than the version it knows; older or equal ones are taken as they are."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        """JSON can carry a lone surrogate or a NUL that no database text column takes."""
        problem = _unstorable(data)
        if problem:
            raise ValueError(problem)
        return data


def _unstorable(value: Any) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains text that is not valid Unicode (a lone surrogate)"
        return None
    if isinstance(value, dict):
        return next(
            (p for k, v in value.items() for p in (_unstorable(k), _unstorable(v)) if p), None
        )
    if isinstance(value, list):
        return next((p for v in value if (p := _unstorable(v))), None)
    return None


def refuse_nulls(model: BaseModel, fields: frozenset[str]) -> None:
    """On partial updates, a required field may be left out but never set to null."""
    nulled = sorted(
        name for name in fields & model.model_fields_set if getattr(model, name) is None
    )
    if nulled:
        raise ValueError(f"{', '.join(nulled)} cannot be null")
