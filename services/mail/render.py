"""Renders an email template (services.mail.catalogue: the operator's folder, then the shipped
one; the client's language) with strict, sandboxed Jinja2."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.contracts.common import CONTROL_CHARACTERS
from models.settings import get_settings
from services.errors import Rejected
from services.mail.catalogue import PARTS, Variant, catalogue
from services.mail.filters import FILTERS, LOCALE_VARIABLE
from services.mail.languages import ENGLISH, locale_for

# Installed beside this package (wheel) or at the repository root (editable install).
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "email"
# RFC 5322 caps a header line at 998 characters; the message log's column follows it.
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    # Which translation was used ("client_signup (fr)") and the locale it was formatted in.
    variant: str
    locale: str


class TemplateError(Rejected):
    """A template that is missing, needs a variable the event did not give, or does what the
    sandbox refuses."""


def configured_folders() -> tuple[Path, ...]:
    """The search folders: CLIENTFLOW_TEMPLATE_DIR's first, when set, then the shipped one.

    Read from the settings here rather than passed down by every caller that queues an email
    (events, the invoice run, a payment's confirmation): it is the process's, like its database.
    """
    return search_folders(get_settings().template_dir)


@lru_cache(maxsize=8)
def search_folders(override: Path | None) -> tuple[Path, ...]:
    return (override.resolve(), TEMPLATES_DIR) if override is not None else (TEMPLATES_DIR,)


# What a plain dict answers to as attributes (its methods, dunders): these keep jinja's
# attribute-first lookup, and the sandbox's checks on them.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, reading `invoice.number` from a plain dict without the failed attribute
    lookup first: jinja tries getattr, and only on its AttributeError the item. Raising that
    exception for every dotted name was the largest single cost of rendering in the invoice
    run's profile (255 of 1,311 samples of Template.render); the result is the same, since
    a plain dict has no attributes but dict's own, which still go jinja's way."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


@lru_cache(maxsize=8)
def environment(folders: tuple[Path, ...]) -> jinja2.Environment:
    """One per set of folders and process, its compiled templates kept for the process.

    Sandboxed for every template, the shipped ones included: an operator's template may read
    the context and call the filters, never reach Python's internals (`''.__class__`) nor
    change a value another recipient's email is rendered from (immutable).
    """
    env = _Environment(
        # The first folder holding a file wins: an override replaces a shipped file.
        loader=jinja2.FileSystemLoader(folders),
        # Only HTML is escaped: escaping plain text would put &amp; into the text part.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        # A misspelt variable must fail loudly, not send "Dear ," to a customer.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Read once, like the catalogue: no stat of every file on every email.
        auto_reload=False,
    )
    env.filters.update(FILTERS)
    return env


@lru_cache(maxsize=256)
def _compiled(folders: tuple[Path, ...], path: str) -> jinja2.Template:
    """One part of a template, compiled, as the environment's own cache keeps it (it is never
    reloaded), without asking that cache on every email.

    Its globals made one dict: jinja keeps them as a ChainMap over the environment's and
    copies that into each render's context key by key, a third of the time of rendering a
    notification (bench/README.md, twelfth session). Nothing changes the environment's
    globals after it is made, so the copy stays true.
    """
    template = environment(folders).get_template(path)
    template.globals = dict(template.globals)
    return template


def template_names(folders: tuple[Path, ...] | None = None) -> list[str]:
    return catalogue(folders or configured_folders()).names()


@lru_cache(maxsize=1024)
def choose(folders: tuple[Path, ...], name: str, language: str | None) -> tuple[Variant, str]:
    """The variant of `name` for a client of `language`, and the locale to format it in.

    Cached: a handful of templates times the languages a client base writes.
    """
    chosen = catalogue(folders).choose(name, locale_for(language) or ENGLISH)
    if chosen is None:  # "_base" and the other partials are no template either
        raise TemplateError(f"unknown email template {name!r}")
    variant, locale = chosen
    if not variant.complete:
        raise TemplateError(
            f"template {variant.label!r} has no {', '.join(variant.missing)} "
            f"in {' or '.join(str(f) for f in folders)}"
        )
    return variant, str(locale)


def render_email(
    name: str,
    context: dict[str, Any],
    *,
    language: str | None = None,
    folders: tuple[Path, ...] | None = None,
) -> RenderedEmail:
    """`language` is the client's (free text, see services.mail.languages); None: English."""
    folders = folders or configured_folders()
    variant, locale = choose(folders, name, language)
    values = {**context, LOCALE_VARIABLE: locale}
    try:
        subject, text, html = (
            _compiled(folders, variant.parts[part].path).render(values) for part in PARTS
        )
    except SecurityError as exc:
        raise TemplateError(f"template {variant.label!r} is refused by the sandbox: {exc}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {variant.label!r} cannot render: {exc.message}") from exc
    except Exception as exc:
        # The context is the publisher's JSON: a value of the wrong shape (a string where the
        # template calls or loops) fails here, and that is the event's fault, not a bug to retry.
        raise TemplateError(
            f"template {variant.label!r} cannot render with this context: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    subject = subject.strip()
    check_subject(variant.label, subject)
    return RenderedEmail(subject, text, html, variant=variant.label, locale=locale)


def check_subject(label: str, subject: str) -> None:
    breaking = CONTROL_CHARACTERS.search(subject)
    if breaking:
        # A subject is one header line; a line break (CR, LF, U+2028, ...) or another control
        # character would break or inject headers, and the email package refuses to write it.
        raise TemplateError(
            f"template {label!r} renders a subject with a line break or control character "
            f"(U+{ord(breaking.group()):04X})"
        )
    if not subject:
        raise TemplateError(f"template {label!r} renders an empty subject")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise TemplateError(
            f"template {label!r} renders a subject of {len(subject)} characters; "
            f"the limit is {MAX_SUBJECT_CHARS}"
        )
