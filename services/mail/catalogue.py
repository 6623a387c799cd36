"""Which email templates exist, in which languages, and where each part is read from.

The folders are searched in order (the operator's CLIENTFLOW_TEMPLATE_DIR, then the shipped
templates/email); for each part the first folder holding it wins, so an operator may replace
one file (a subject, the `_base` layout) and keep the rest. Layout, in each folder:

    <name>/{subject.txt, body.txt, body.html}             the default, English
    <name>/<language>/{subject.txt, body.txt, body.html}   a translation: fr, de, pt_BR, ...
    _<partial>/...                                        shared layouts and includes

Scanned once per set of folders and process (rendering is on every event's path): a template
added or removed later is seen after a restart, as the template files themselves are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from babel import Locale

from services.mail.languages import ENGLISH, locale_for

log = logging.getLogger(__name__)

PARTS = ("subject.txt", "body.txt", "body.html")
# The names notifications.send may ask for (its contract's TemplateName); other folders
# (".git", "_base", "README") are not templates.
TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Part:
    path: str  # as the Jinja loader finds it: "client_signup/fr/subject.txt"
    folder: Path  # the search folder it is read from


@dataclass(frozen=True)
class Variant:
    """One language of one template: its parts as found, complete or not."""

    name: str
    language: str | None  # a locale identifier ("fr", "pt_BR"); None: the default, English
    parts: Mapping[str, Part]

    @property
    def label(self) -> str:
        return self.name if self.language is None else f"{self.name} ({self.language})"

    @property
    def missing(self) -> list[str]:
        return [part for part in PARTS if part not in self.parts]

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Catalogue:
    folders: tuple[Path, ...]
    # name -> language (None for the default) -> variant
    templates: Mapping[str, Mapping[str | None, Variant]]
    # Folders inside a template that name no language Babel knows ("client_signup/images").
    ignored: tuple[str, ...]

    def names(self) -> list[str]:
        return sorted(self.templates)

    def choose(self, name: str, locale: Locale) -> tuple[Variant, Locale] | None:
        """The variant for a reader of `locale` and the locale to format it in; None for an
        unknown template. A translation is used only when all three of its parts exist; else
        the default, in English (formatted for the reader's own English, e.g. en_GB, if any).
        """
        variants = self.templates.get(name)
        if variants is None:
            return None
        for language in dict.fromkeys((str(locale), locale.language)):
            variant = variants.get(language)
            if variant is not None and variant.complete:
                return variant, locale
        default = variants.get(None) or Variant(name, None, {})
        return default, locale if locale.language == ENGLISH.language else ENGLISH


@lru_cache(maxsize=8)
def catalogue(folders: tuple[Path, ...]) -> Catalogue:
    found: dict[str, dict[str | None, dict[str, Part]]] = {}
    ignored: list[str] = []
    for folder in folders:
        for template in _subfolders(folder):
            if not TEMPLATE_NAME.match(template.name):
                continue
            variants = found.setdefault(template.name, {})
            _add_parts(variants.setdefault(None, {}), template, template.name, folder)
            for sub in _subfolders(template):
                locale = locale_for(sub.name)
                if locale is None:
                    ignored.append(f"{template.name}/{sub.name}")
                    continue
                relative = f"{template.name}/{sub.name}"
                _add_parts(variants.setdefault(str(locale), {}), sub, relative, folder)
    result = Catalogue(
        folders=folders,
        templates={
            name: {lang: Variant(name, lang, parts) for lang, parts in variants.items()}
            for name, variants in sorted(found.items())
        },
        ignored=tuple(ignored),
    )
    for kept in result.templates.values():
        for variant in kept.values():
            if variant.language is not None and not variant.complete:
                # Not an error: its readers get the default until the translation is whole.
                log.warning(
                    "email template %s lacks %s: its readers get the default, English",
                    variant.label,
                    ", ".join(variant.missing),
                )
    return result


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _add_parts(parts: dict[str, Part], folder: Path, relative: str, root: Path) -> None:
    for part in PARTS:
        if part not in parts and (folder / part).is_file():
            parts[part] = Part(f"{relative}/{part}", root)
