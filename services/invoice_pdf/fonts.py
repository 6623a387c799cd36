"""The fonts the invoice PDF is written in, and the characters they can show.

Two typefaces, tried in this order (services.invoice_pdf.document.invoice_pdf):

- The PDF core fonts (Helvetica and its bold) in Windows-1252, which has "Zoë", "£", "€",
  the en dash and the rest of Western European text. Every PDF reader has them, so the file embeds
  none: making an invoice costs a few milliseconds.
- DejaVu Sans and its bold, vendored here, for an invoice with a character outside
  Windows-1252 ("Łukasz", a Greek or Cyrillic name). fpdf2 embeds the glyphs a document uses,
  and cutting that subset out of the font is most of the cost: ~35 ms of CPU a document, against
  1 to 2 for the core fonts (bench/invoice_pdf.py). Subset to Latin, Latin Extended, Greek,
  Cyrillic, punctuation and currency signs (200 KB for both; fonts/LICENSE), since a system font
  (DejaVu under /usr/share/fonts) is not on every machine or image.

A character neither has (CJK, emoji) is written as "?" rather than as an empty box or an fpdf2
error: the PDF is still made, and every figure on it is still right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fontTools.ttLib import TTFont
from fpdf import FPDF

FONTS_DIR = Path(__file__).resolve().parent / "fonts"
Style = Literal["", "B"]  # regular, bold
FILES: dict[Style, Path] = {
    "": FONTS_DIR / "DejaVuSans.ttf",
    "B": FONTS_DIR / "DejaVuSans-Bold.ttf",
}
REPLACEMENT = "?"
# Babel writes French and other amounts with a narrow no-break space ("1 215,59 £"), which
# Windows-1252 lacks; the no-break space it has looks the same on the page and keeps such an
# invoice on the core fonts.
_SAME_ON_THE_PAGE = {"\u202f": "\u00a0"}


@dataclass(frozen=True)
class Typeface:
    """A font family the document is set in: `files` to embed, or none for a core font."""

    family: str
    files: Mapping[Style, Path] = field(default_factory=dict)
    # The advance of its widest glyph in either style, in ems (None: not known); text no
    # longer than a line's room in these is known to fit without measuring it.
    widest_glyph: float | None = None

    def install(self, pdf: FPDF) -> None:
        # Windows-1252 rather than fpdf2's default Latin-1: it adds the euro sign, the
        # dashes, the curly quotes and "Œ".
        pdf.core_fonts_encoding = "cp1252"
        for style, path in self.files.items():
            pdf.add_font(self.family, style, str(path))


# Helvetica's widest glyphs are 1.015 em, its bold's 1 em (fpdf2's widths; a test checks them).
CORE = Typeface("helvetica", widest_glyph=1.015)
EMBEDDED = Typeface("DejaVu", FILES)


@lru_cache(maxsize=1)
def covered() -> frozenset[int]:
    """The code points every embedded style has a glyph for (read once per process)."""
    maps = [set(TTFont(path)["cmap"].getBestCmap()) for path in FILES.values()]
    return frozenset(set.intersection(*maps))


def printable(text: str) -> str:
    """`text` with the characters the fonts cannot draw replaced, and line breaks as spaces
    (every value on the invoice is one line)."""
    if text.isascii() and text.isprintable():
        # Nearly every value: printable ASCII, which both typefaces draw (a test checks), is
        # kept as it is, without looking at each character (a sixteenth of a PDF's CPU).
        return text
    glyphs = covered()
    return "".join(
        " " if char in "\r\n\t"
        else _SAME_ON_THE_PAGE.get(char, char) if ord(char) in glyphs
        else REPLACEMENT
        for char in text
    )  # fmt: skip
