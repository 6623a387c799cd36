"""What `clientflow templates list` shows: each template in each language, where its parts come
from, and the variables it uses (its own parts and the layouts and includes they name)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta

from services.mail.catalogue import PARTS, Variant, catalogue
from services.mail.filters import LOCALE_VARIABLE
from services.mail.render import TEMPLATES_DIR, configured_folders, environment


@dataclass(frozen=True)
class TemplateRow:
    name: str
    language: str  # "en (default)", "fr"
    origin: str  # "shipped", "override", "override: subject.txt", "incomplete: ..."
    variables: list[str]
    # A part that cannot be read or parsed (a syntax error, an include that is not there).
    problem: str | None = None


def overview(folders: tuple[Path, ...] | None = None) -> list[TemplateRow]:
    folders = folders or configured_folders()
    found = catalogue(folders)
    env = environment(folders)
    return [
        _row(env, variant)
        for name in found.names()
        for variant in sorted(found.templates[name].values(), key=_language_order)
    ]


def ignored_folders(folders: tuple[Path, ...] | None = None) -> tuple[str, ...]:
    return catalogue(folders or configured_folders()).ignored


def overridden_layouts(folders: tuple[Path, ...] | None = None) -> list[str]:
    """Files of the operator's folder under `_base/`, `_invoice/`, ...: shared by many
    templates, so they are listed on their own ("_base/body.html")."""
    found: set[str] = set()
    for folder in folders or configured_folders():
        if folder == TEMPLATES_DIR:
            continue
        for layout in folder.glob("_*/"):
            found.update(str(f.relative_to(folder)) for f in layout.rglob("*") if f.is_file())
    return sorted(found)


def variables_used(env: jinja2.Environment, paths: Iterable[str]) -> set[str]:
    """The undeclared variables of these templates and of every template they extend,
    include or import, the variable the renderer sets (`locale`) left out."""
    assert env.loader is not None
    names: set[str] = set()
    seen: set[str] = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        source, _, _ = env.loader.get_source(env, path)
        tree = env.parse(source)
        names |= meta.find_undeclared_variables(tree)
        # None: a name computed at run time ({% extends layout %}), which cannot be followed.
        todo += [ref for ref in meta.find_referenced_templates(tree) if ref is not None]
    return names - {LOCALE_VARIABLE}


def _row(env: jinja2.Environment, variant: Variant) -> TemplateRow:
    language = variant.language or "en (default)"
    try:
        variables = sorted(variables_used(env, (p.path for p in variant.parts.values())))
        problem = None
    except jinja2.TemplateError as exc:
        variables, problem = [], f"{type(exc).__name__}: {exc}"
    return TemplateRow(variant.name, language, _origin(variant), variables, problem)


def _origin(variant: Variant) -> str:
    if not variant.complete:
        fallback = "not sent" if variant.language is None else "English is sent"
        return f"incomplete, {fallback}: no {', '.join(variant.missing)}"
    overridden = [part for part in PARTS if variant.parts[part].folder != TEMPLATES_DIR]
    if not overridden:
        return "shipped"
    if len(overridden) == len(PARTS):
        return "override"
    return f"override: {', '.join(overridden)}"


def _language_order(variant: Variant) -> str:
    return "" if variant.language is None else variant.language
