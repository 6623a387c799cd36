"""Formats an amount with its ISO 4217 currency: as the client's language writes it in emails,
and the same way everywhere else (refusal reasons, logs): "$1,234.50 USD".

format_money is a small explicit formatter rather than babel: a reason or a log line must not
change with anybody's locale, and a symbol prefix plus the code suffix is what WHMCS shows by
default. Codes without a symbol here print as the code alone, which is never ambiguous.
format_money_in is babel's, for the reader: "1 200,00 £GB" in French, "£1,200.00" in English.
Both always show two decimals (the columns are Numeric(12, 2)), rounded half up.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel import Locale
from babel.numbers import format_currency

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


# Cached: babel applies a number pattern step by step, and an invoice's amounts are written
# again for every recipient, in each part of the email (text, HTML, summary) and in its PDF:
# babel's formatting was 15 % of the invoice run's worker CPU (bench/README.md). Equal
# amounts (1200.5 and 1200.50) share an entry, rightly: both are written with two decimals.
@lru_cache(maxsize=4096)
def format_money_in(amount: Decimal, currency: str, locale: Locale) -> str:
    """The amount as readers of `locale` write it, with the locale's symbol for the currency
    (which names the country where the bare symbol would be ambiguous there: "$US" in French).
    """
    quantized = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    # currency_digits=False: two decimals for every currency, as stored; babel would otherwise
    # round a yen amount of 1200.50 to 1,201.
    return format_currency(quantized, currency.upper(), locale=locale, currency_digits=False)
