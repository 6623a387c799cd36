"""Formats an amount with its ISO 4217 currency, the same way in every email: "$1,234.50 USD".

A small explicit formatter rather than babel: our amounts always have two decimals (the
columns are Numeric(12, 2)), the format must not change with the worker's locale, and a
symbol prefix plus the code suffix is what WHMCS shows by default. Codes without a symbol
here print as the code alone, which is never ambiguous.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "INR": "₹",
    "AUD": "A$",
    "CAD": "C$",
    "NZD": "NZ$",
}
CENT = Decimal("0.01")


def format_money(amount: Decimal, currency: str) -> str:
    code = currency.upper()
    quantized = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if quantized < 0 else ""
    digits = f"{abs(quantized):,.2f}"
    return f"{sign}{SYMBOLS.get(code, '')}{digits} {code}"
