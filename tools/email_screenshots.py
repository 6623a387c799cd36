"""Screenshots of an email at a phone's and a desktop's width, as docs/templates.md shows them.

    .venv/bin/python tools/email_screenshots.py                  # docs/images/invoice-{375,800}.png
    .venv/bin/python tools/email_screenshots.py --template client_signup --language fr \\
        --settings --out /tmp/shots                               # your CLIENTFLOW_* branding

Renders the template for the sample client (as `clientflow templates preview` does, with a
fixed date so the images only change when the layout does) and photographs its HTML part with
headless Chromium, the same call the width test makes (tools/email_browser.py). Needs
`chromium` (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.company import Company  # noqa: E402
from models.settings import get_settings  # noqa: E402
from services.mail.preview import preview_email, sample_client  # noqa: E402
from services.mail.render import TEMPLATES_DIR  # noqa: E402
from tools.email_browser import find_chromium, screenshot  # noqa: E402

WIDTHS = (375, 800)
TODAY = dt.date(2026, 3, 1)
# The business the docs' pictures show: every part of the layout but the logo (an https URL
# the screenshot would have to fetch; without one the header is the name in text).
SAMPLE_COMPANY = Company(
    name="Analytical Hosting Ltd",
    address_lines=("221 Babbage Business Park", "London SW1Y 4JH", "United Kingdom"),
    client_area_url="https://billing.example.com/clientarea.php",
    invoice_url="https://billing.example.com/viewinvoice.php?id={invoice_id}",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default="invoice_created")
    parser.add_argument("--language", default=None, help="e.g. fr; default: English")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument(
        "--prefix", default=None, help="file names' start (default: invoice for invoice_*)"
    )
    parser.add_argument(
        "--settings",
        action="store_true",
        help="the company from CLIENTFLOW_* settings and CLIENTFLOW_TEMPLATE_DIR's templates",
    )
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    company = get_settings().company if args.settings else SAMPLE_COMPANY
    folders = None if args.settings else (TEMPLATES_DIR,)
    rendered = preview_email(
        args.template, sample_client(), company, language=args.language, folders=folders,
        today=TODAY,
    )  # fmt: skip
    prefix = args.prefix or (
        "invoice" if args.template.startswith("invoice_") else args.template
    )
    if args.language:
        prefix = f"{prefix}-{args.language}"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="email-screenshots-") as work:
        for width in WIDTHS:
            path = args.out / f"{prefix}-{width}.png"
            measured = screenshot(binary, rendered.html, width, path, Path(work))
            wide = " (wider than the window!)" if measured.overflows else ""
            print(f"{path}: {width} x {measured.scroll_height} px{wide}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
