"""Every shipped email, in each shipped language, fits a 375 px phone and an 800 px reading pane
without scrolling sideways, laid out by a real browser engine (headless Chromium).

Marked `browser`: it starts Chromium, so it runs in `make test`'s in-process tier (on two
pytest-xdist processes), not in `make check`. Each process that gets some of these tests
renders the emails and starts Chromium once for all of them (the module's `measured`), not
once per test. Without Chromium it is skipped with one line saying so.
"""

from __future__ import annotations

import datetime as dt

import pytest

from models.company import Company
from services.mail.catalogue import catalogue
from services.mail.preview import preview_email, sample_client
from services.mail.render import TEMPLATES_DIR
from tools.email_browser import Measurement, find_chromium, measure_widths

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
if CHROMIUM is None:
    # At collection, so the whole file is one skipped line under -ra, not one per test.
    pytest.skip(
        "chromium is not installed (apt-get install chromium): email widths unchecked",
        allow_module_level=True,
    )

WIDTHS = (375, 800)
SHIPPED = (TEMPLATES_DIR,)
# Every part of the layout present: a logo (a data: URL, so nothing waits on the network;
# 480 px wide, more than the column, which must scale it down), a three-line address, the
# client-area link and the pay button.
LOGO = (
    "data:image/svg+xml,"
    "%3Csvg xmlns='http://www.w3.org/2000/svg' width='480' height='96'%3E"
    "%3Crect width='480' height='96' fill='%231f4e79'/%3E%3C/svg%3E"
)
COMPANY = Company(
    name="Analytical Hosting Ltd",
    address_lines=("Unit 4, 221 Babbage Business Park", "London SW1Y 4JH", "United Kingdom"),
    logo_url=LOGO,
    client_area_url="https://billing.example.com/clientarea.php",
    invoice_url="https://billing.example.com/viewinvoice.php?id={invoice_id}",
)
# A page wider than any screen: the measurement must report it, or it measures nothing.
TOO_WIDE = "too_wide"
TOO_WIDE_PAGE = (
    '<!DOCTYPE html><html><body style="margin: 0;">'
    '<table width="900" style="width: 900px;"><tr><td>900 px</td></tr></table></body></html>'
)


def shipped_variants() -> list[tuple[str, str | None]]:
    found = catalogue(SHIPPED)
    return [(name, language) for name in found.names() for language in found.templates[name]]


def label(name: str, language: str | None) -> str:
    return f"{name}[{language or 'en'}]"


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Measurement]:
    assert CHROMIUM is not None  # else the module was skipped
    pages = {TOO_WIDE: TOO_WIDE_PAGE}
    for name, language in shipped_variants():
        rendered = preview_email(
            name, sample_client(), COMPANY, language=language, folders=SHIPPED,
            today=dt.date(2026, 3, 1),
        )  # fmt: skip
        pages[label(name, language)] = rendered.html
    results = measure_widths(CHROMIUM, pages, WIDTHS, tmp_path_factory.mktemp("widths"))
    return {(result.label, result.width): result for result in results}


def test_the_measurement_sees_a_page_wider_than_the_window(
    measured: dict[tuple[str, int], Measurement],
) -> None:
    for width in WIDTHS:
        result = measured[(TOO_WIDE, width)]
        # The frame really is `width` wide: else the widths below would prove nothing.
        assert result.viewport_width == width
        assert result.scroll_width >= 900
        assert result.overflows


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("name", "language"), shipped_variants())
def test_no_email_is_wider_than_the_screen(
    measured: dict[tuple[str, int], Measurement], name: str, language: str | None, width: int
) -> None:
    result = measured[(label(name, language), width)]
    assert result.viewport_width == width
    assert not result.overflows, (
        f"{label(name, language)} is {result.scroll_width} px wide in a {width} px window"
    )


def test_every_shipped_language_is_measured(
    measured: dict[tuple[str, int], Measurement],
) -> None:
    languages = {language for _, language in shipped_variants()}
    assert languages == {None, "fr"}
    assert len(measured) == (len(shipped_variants()) + 1) * len(WIDTHS)


@pytest.mark.parametrize(("width", "column"), [(375, 375 - 2 * 8), (800, 600)])
def test_the_column_is_600_px_wide_or_the_screen_less_its_margins(
    measured: dict[tuple[str, int], Measurement], width: int, column: int
) -> None:
    """The layout itself: 600 px centred on a wide screen, the whole width (less the 8 px
    each side _base leaves) on a phone."""
    for name, language in shipped_variants():
        assert measured[(label(name, language), width)].column_width == column, name
