"""Renders templates/email/<name>/{subject.txt, body.txt, body.html} with strict Jinja2."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from models.contracts.common import CONTROL_CHARACTERS
from services.errors import Rejected

# Installed beside this package (wheel) or at the repository root (editable install).
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "email"
PARTS = ("subject.txt", "body.txt", "body.html")
# RFC 5322 caps a header line at 998 characters; the message log's column follows it.
MAX_SUBJECT_CHARS = 998


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class TemplateError(Rejected):
    """A template that is missing or needs a variable the event did not give."""


@lru_cache(maxsize=4)
def environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        # Only HTML is escaped: escaping plain text would put &amp; into the text part.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        # A misspelt variable must fail loudly, not send "Dear ," to a customer.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_names(templates_dir: Path = TEMPLATES_DIR) -> list[str]:
    return sorted(
        p.name for p in templates_dir.iterdir() if p.is_dir() and not p.name.startswith("_")
    )


def render_email(
    name: str, context: dict[str, Any], templates_dir: Path = TEMPLATES_DIR
) -> RenderedEmail:
    if name.startswith("_") or name not in template_names(templates_dir):
        raise TemplateError(f"unknown email template {name!r}")
    env = environment(templates_dir)
    try:
        subject, text, html = (env.get_template(f"{name}/{part}").render(context) for part in PARTS)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name!r} cannot render: {exc.message}") from exc
    except Exception as exc:
        # The context is the publisher's JSON: a value of the wrong shape (a string where the
        # template calls or loops) fails here, and that is the event's fault, not a bug to retry.
        raise TemplateError(
            f"template {name!r} cannot render with this context: {type(exc).__name__}: {exc}"
        ) from exc
    subject = subject.strip()
    breaking = CONTROL_CHARACTERS.search(subject)
    if breaking:
        # A subject is one header line; a line break (CR, LF, U+2028, ...) or another control
        # character would break or inject headers, and the email package refuses to write it.
        raise TemplateError(
            f"template {name!r} renders a subject with a line break or control character "
            f"(U+{ord(breaking.group()):04X})"
        )
    if not subject:
        raise TemplateError(f"template {name!r} renders an empty subject")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise TemplateError(
            f"template {name!r} renders a subject of {len(subject)} characters; "
            f"the limit is {MAX_SUBJECT_CHARS}"
        )
    return RenderedEmail(subject=subject, text=text, html=html)
