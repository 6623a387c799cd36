"""Money in emails: exact, two decimals, grouped, with its currency whatever the locale."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.money import format_money


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1234.5", "USD", "$1,234.50 USD"),
        ("0", "eur", "€0.00 EUR"),
        ("1215.59", "GBP", "£1,215.59 GBP"),
        ("9999999999.99", "CHF", "9,999,999,999.99 CHF"),
        ("-5", "USD", "-$5.00 USD"),
        ("0.005", "USD", "$0.01 USD"),
    ],
)
def test_format_money(amount: str, currency: str, expected: str) -> None:
    assert format_money(Decimal(amount), currency) == expected
