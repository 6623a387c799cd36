"""The fonts the invoice PDF is written in, and the characters they can show.

fpdf2's built-in fonts are the PDF core fonts, Latin-1 only: "Zoë" would do, "Łukasz", "€"
in a line item or a Greek or Cyrillic name would not. It ships no font of its own, and a
system font (DejaVu under /usr/share/fonts) is not on every machine or image, so DejaVu Sans
and its bold are vendored here, subset to Latin, Latin Extended, Greek, Cyrillic,
punctuation and currency signs (200 KB for both; fonts/LICENSE). A character outside them
(CJK, emoji) is written as "?" rather than as an empty box or an fpdf2 error: the PDF is
still made, and every figure on it is still right.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from fontTools.ttLib import TTFont

FONTS_DIR = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVu"
Style = Literal["", "B"]  # regular, bold
FILES: dict[Style, Path] = {
    "": FONTS_DIR / "DejaVuSans.ttf",
    "B": FONTS_DIR / "DejaVuSans-Bold.ttf",
}
REPLACEMENT = "?"


@lru_cache(maxsize=1)
def covered() -> frozenset[int]:
    """The code points every style has a glyph for (read once per process)."""
    maps = [set(TTFont(path)["cmap"].getBestCmap()) for path in FILES.values()]
    return frozenset(set.intersection(*maps))


def printable(text: str) -> str:
    """`text` with the characters the fonts cannot draw replaced, and line breaks as spaces
    (every value on the invoice is one line)."""
    glyphs = covered()
    return "".join(
        " " if char in "\r\n\t" else char if ord(char) in glyphs else REPLACEMENT
        for char in text
    )
