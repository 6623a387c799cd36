"""The Jinja filters of every email template: `|money(currency)` and `|date`, written as the
language of the email writes them (the `locale` the renderer puts in the context)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import jinja2
from babel import Locale
from babel.dates import format_date

from services.mail.languages import ENGLISH
from services.money import format_money_in

# The variable render_email sets to the email's locale identifier ("fr", "en_GB").
LOCALE_VARIABLE = "locale"


@lru_cache(maxsize=64)
def _locale(identifier: str) -> Locale:
    return Locale.parse(identifier)


def locale_of(context: jinja2.runtime.Context) -> Locale:
    # A macro imported without context has none: English, like the templates it falls back to.
    identifier = context.get(LOCALE_VARIABLE)
    return _locale(identifier) if isinstance(identifier, str) else ENGLISH


def as_amount(value: Any) -> Decimal:
    """An amount from the context: a Decimal, an integer or a decimal string ("1200.50")."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise TypeError(f"money needs an amount, not {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"money needs an amount, not {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"money needs an amount, not {value!r}")
    return amount


def as_date(value: Any) -> dt.date:
    """A date from the context: a date (or datetime) or an ISO string ("2026-03-15")."""
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    raise TypeError(f"date needs a date, not {type(value).__name__}")


@jinja2.pass_context
def money(context: jinja2.runtime.Context, value: Any, currency: str) -> str:
    """{{ invoice.total|money(invoice.currency) }}: "£1,200.00", "1 200,00 £GB"."""
    return format_money_in(as_amount(value), str(currency), locale_of(context))


@lru_cache(maxsize=1024)
def date_in(value: dt.date, format: str, locale: Locale) -> str:
    """Cached like format_money_in: a run's invoices share a few dates, each written in every
    part of every email."""
    return format_date(value, format, locale=locale)


@jinja2.pass_context
def date(context: jinja2.runtime.Context, value: Any, format: str = "long") -> str:
    """{{ invoice.due_date|date }}: "March 15, 2026", "15 mars 2026"; or |date("short")."""
    return date_in(as_date(value), format, locale_of(context))


FILTERS = {"money": money, "date": date}
