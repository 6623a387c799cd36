"""The business an email comes from: its name, postal address, logo and links, from settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# What CLIENTFLOW_INVOICE_URL may name: the invoice's id or its number, filled in per email.
INVOICE_URL_FIELDS = ("{invoice_id}", "{number}")


@dataclass(frozen=True)
class Company:
    name: str
    address_lines: tuple[str, ...] = ()
    logo_url: str = ""
    client_area_url: str = ""
    # A URL template with {invoice_id} and/or {number}; empty: no "pay this invoice" link.
    invoice_url: str = ""

    def invoice_link(self, invoice: Mapping[str, Any]) -> str:
        """The invoice's own page, or "" when there is no URL template or nothing to fill it."""
        if not self.invoice_url:
            return ""
        link = self.invoice_url
        for placeholder, key in zip(INVOICE_URL_FIELDS, ("id", "number"), strict=True):
            if placeholder in link:
                value = invoice.get(key)
                if value is None or value == "":
                    return ""
                # Quoted whole: an invoice number such as "2026/001" stays one path segment.
                link = link.replace(placeholder, quote(str(value), safe=""))
        return link

    def template_context(self) -> dict[str, Any]:
        """What templates see as `company`: plain values, nothing the sandbox must guard."""
        return {
            "name": self.name,
            "address_lines": list(self.address_lines),
            "logo_url": self.logo_url,
            "client_area_url": self.client_area_url,
        }


# Tests, benchmarks and older callers pass a bare name: a company with no address or links.
CompanyLike = Company | str


def as_company(value: CompanyLike) -> Company:
    return value if isinstance(value, Company) else Company(name=value)
