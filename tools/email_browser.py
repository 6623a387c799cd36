"""Headless Chromium for the email layout: the width test and the docs' screenshots share it.

Email HTML is measured where it is laid out: each page goes into an iframe of the width a
reader's screen has (375 px, a phone; 800 px, a desktop mail client's reading pane), all in
one page, so one Chromium start measures every template at every width. A script in the page
writes what it measured into the DOM, which `--dump-dom` prints.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# A headless Chromium renders a page in about a second; this only stops a hung one.
CHROMIUM_TIMEOUT_SECONDS = 180
# Virtual time: how long the page may run its scripts before the DOM is printed. Nothing in
# the page waits on the network (the emails' images are data: URLs or absent).
VIRTUAL_TIME_MS = 10_000
_RESULT = re.compile(r'<pre id="clientflow-widths">(.*?)</pre>', re.DOTALL)

# The email's column in templates/email/_base: the table whose width attribute is 600.
COLUMN_SELECTOR = 'table[width="600"]'
# Runs once every iframe has loaded (the parent's load event waits for them). scrollWidth
# is the laid-out width of the email's whole document; innerWidth the iframe's viewport.
_MEASURE_SCRIPT = """
window.addEventListener("load", function () {
  var COLUMN = %s;
  var results = [];
  document.querySelectorAll("iframe[data-label]").forEach(function (frame) {
    var doc = frame.contentDocument;
    var root = doc.documentElement;
    var column = doc.querySelector(COLUMN);
    results.push({
      label: frame.dataset.label,
      width: Number(frame.dataset.width),
      viewport_width: frame.contentWindow.innerWidth,
      scroll_width: Math.max(root.scrollWidth, doc.body ? doc.body.scrollWidth : 0),
      scroll_height: Math.max(root.scrollHeight, doc.body ? doc.body.scrollHeight : 0),
      column_width: column ? column.getBoundingClientRect().width : 0
    });
  });
  var out = document.createElement("pre");
  out.id = "clientflow-widths";
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
});
"""


class BrowserError(RuntimeError):
    """Chromium did not start, failed, or printed no measurement."""


@dataclass(frozen=True)
class Measurement:
    label: str
    width: int
    viewport_width: int
    scroll_width: int
    scroll_height: int
    # The laid-out width of the email's column (COLUMN_SELECTOR); 0 in a page without one.
    column_width: float

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.viewport_width


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(binary: str, profile: Path, *args: str) -> list[str]:
    flags = [
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",  # a scrollbar would take width from the page being measured
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
    ]
    if os.geteuid() == 0:
        # Chromium will not start its sandbox as root (containers, CI); the pages it opens
        # here are our own rendered templates.
        flags.append("--no-sandbox")
    return [binary, *flags, *args]


def run_chromium(binary: str, workdir: Path, *args: str) -> str:
    """Chromium's stdout; a failure says what it printed."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="chromium-profile-") as profile:
        try:
            done = subprocess.run(
                chromium_command(binary, Path(profile), *args),
                capture_output=True,
                text=True,
                timeout=CHROMIUM_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"chromium did not finish in {exc.timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise BrowserError(f"chromium exited {done.returncode}: " + " | ".join(tail))
    return done.stdout


def measure_widths(
    binary: str, pages: Mapping[str, str], widths: Sequence[int], workdir: Path
) -> list[Measurement]:
    """Each page (label -> HTML) laid out at each width, in one Chromium run."""
    frames = "\n".join(
        f'<iframe data-label="{html.escape(label)}" data-width="{width}" width="{width}" '
        f'height="600" style="display: block; border: 0; width: {width}px; height: 600px;" '
        f'srcdoc="{html.escape(page)}"></iframe>'
        for label, page in pages.items()
        for width in widths
    )
    script = _MEASURE_SCRIPT % json.dumps(COLUMN_SELECTOR)
    wrapper = workdir / "widths.html"
    wrapper.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n"
        f'<body style="margin: 0;">\n{frames}\n<script>{script}</script>\n'
        "</body></html>\n",
        encoding="utf-8",
    )
    dom = run_chromium(
        binary, workdir, f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom",
        wrapper.as_uri(),
    )  # fmt: skip
    found = _RESULT.search(dom)
    if found is None:
        raise BrowserError("chromium printed the page without its measurements (did it load?)")
    return [
        Measurement(
            label=str(row["label"]),
            width=int(row["width"]),
            viewport_width=int(row["viewport_width"]),
            scroll_width=int(row["scroll_width"]),
            scroll_height=int(row["scroll_height"]),
            column_width=float(row["column_width"]),
        )
        for row in json.loads(html.unescape(found.group(1)))
    ]


def screenshot(binary: str, page: str, width: int, path: Path, workdir: Path) -> Measurement:
    """A PNG of `page` in a window `width` px wide and as tall as the email."""
    (measured,) = measure_widths(binary, {path.stem: page}, [width], workdir)
    source = workdir / f"{path.stem}.html"
    source.write_text(page, encoding="utf-8")
    run_chromium(
        binary, workdir, f"--window-size={width},{measured.scroll_height}",
        f"--screenshot={path.resolve()}", source.as_uri(),
    )  # fmt: skip
    if not path.exists():
        raise BrowserError(f"chromium wrote no screenshot to {path}")
    return measured
