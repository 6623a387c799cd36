"""A client's `language` (free text, WHMCS style: "french", "portuguese-br", or "fr", "fr_CA")
as the Babel locale its emails are written and formatted in."""

from __future__ import annotations

from functools import cache, lru_cache

from babel import Locale, UnknownLocaleError

# The language of the templates kept directly in <name>/ (no language folder).
ENGLISH = Locale("en")

# WHMCS language names that are not Babel's English name of a language: a country variant,
# an older name, and WHMCS's own spelling of Ukrainian (its language file is "ukranian").
WHMCS_NAMES = {
    "portuguese-br": "pt_BR",
    "portuguese-pt": "pt_PT",
    "farsi": "fa",
    "ukranian": "uk",
}


@cache
def _english_names() -> dict[str, str]:
    """Every language Babel can name in English, lower-cased: "french" -> "fr"."""
    return {name.lower(): code for code, name in ENGLISH.languages.items()}


@lru_cache(maxsize=1024)
def locale_for(language: str | None) -> Locale | None:
    """The locale `language` names, or None when it names none (empty, or unknown to Babel).

    Cached: rendering asks for every email, with the few values a client base holds.
    """
    if not language or not language.strip():
        return None
    key = language.strip().lower()
    code = WHMCS_NAMES.get(key) or _english_names().get(key.replace("-", " ").replace("_", " "))
    try:
        return Locale.parse(code or key.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None
