"""The operator's templates (CLIENTFLOW_TEMPLATE_DIR): searched first, file by file, free to
extend the shipped `_base`, and rendered in Jinja's sandbox like every template."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from test_templates import BASE_CONTEXT, SAMPLES

from models.settings import Settings
from services.mail.overview import overridden_layouts, overview, variables_used
from services.mail.render import (
    TEMPLATES_DIR,
    TemplateError,
    environment,
    render_email,
    search_folders,
    template_names,
)


def write(folder: Path, files: dict[str, str]) -> tuple[Path, ...]:
    """The files under `folder`; the search folders with it first, as the setting makes them."""
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return (folder, TEMPLATES_DIR)


def test_the_setting_puts_the_operators_folder_first(tmp_path: Path) -> None:
    settings = Settings(template_dir=tmp_path)
    assert search_folders(settings.template_dir) == (tmp_path.resolve(), TEMPLATES_DIR)
    assert search_folders(Settings().template_dir) == (TEMPLATES_DIR,)


def test_a_template_folder_that_does_not_exist_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="template_dir"):
        Settings(template_dir=tmp_path / "missing")


def test_an_overridden_part_replaces_the_shipped_one_and_only_it(tmp_path: Path) -> None:
    folders = write(tmp_path, {"client_signup/subject.txt": "Hello from {{ company_name }}!"})

    rendered = render_email("client_signup", BASE_CONTEXT, folders=folders)

    assert rendered.subject == "Hello from Test Hosting!"
    assert "Thank you for signing up with Test Hosting" in rendered.text  # the shipped body
    rows = {(row.name, row.language): row.origin for row in overview(folders)}
    assert rows[("client_signup", "en (default)")] == "override: subject.txt"
    assert rows[("client_signup", "fr")] == "shipped"


def test_a_new_template_of_the_operator_extends_the_shipped_base(tmp_path: Path) -> None:
    folders = write(
        tmp_path,
        {
            "maintenance/subject.txt": "Maintenance on {{ day|date }}",
            "maintenance/body.txt": '{% extends "_base/body.txt" %}\n{% block content %}'
            "We upgrade the network on {{ day|date }}.{% endblock %}",
            "maintenance/body.html": '{% extends "_base/body.html" %}\n{% block content %}'
            "<p>We upgrade <b>{{ what }}</b>.</p>{% endblock %}",
            "maintenance/fr/subject.txt": "Maintenance le {{ day|date }}",
            "maintenance/fr/body.txt": '{% extends "_base/fr/body.txt" %}\n{% block content %}'
            "Nous mettons le réseau à niveau le {{ day|date }}.{% endblock %}",
            "maintenance/fr/body.html": '{% extends "_base/fr/body.html" %}\n'
            "{% block content %}<p>{{ what }}</p>{% endblock %}",
        },
    )
    context = {**BASE_CONTEXT, "day": "2026-07-04", "what": "<routers>"}

    english = render_email("maintenance", context, folders=folders)
    french = render_email("maintenance", context, language="french", folders=folders)

    assert "maintenance" in template_names(folders)
    assert english.subject == "Maintenance on July 4, 2026"
    assert english.text == (
        "Dear Ada Lovelace,\n\nWe upgrade the network on July 4, 2026.\nRegards,\nTest Hosting\n"
    )
    assert "<p>We upgrade <b>&lt;routers&gt;</b>.</p>" in english.html
    assert french.subject == "Maintenance le 4 juillet 2026"
    assert french.text.startswith("Bonjour Ada Lovelace,\n\nNous mettons le réseau à niveau le")
    rows = {(row.name, row.language): row for row in overview(folders)}
    assert rows[("maintenance", "en (default)")].origin == "override"
    # Its own variables, and those of the shipped layout it extends.
    assert rows[("maintenance", "en (default)")].variables == [
        "company", "company_name", "day", "recipient", "what",
    ]  # fmt: skip


def test_an_overridden_layout_changes_every_email_that_extends_it(tmp_path: Path) -> None:
    folders = write(
        tmp_path,
        {"_base/body.txt": "Hi {{ recipient.name }}!\n{% block content %}{% endblock %}\n-- "
         "{{ company_name }}, {{ client.id }}\n"},
    )  # fmt: skip

    rendered = render_email("client_signup", BASE_CONTEXT, folders=folders)

    assert rendered.text.startswith("Hi Ada Lovelace!\nThank you for signing up")
    assert rendered.text.endswith("-- Test Hosting, C1\n")
    assert overridden_layouts(folders) == ["_base/body.txt"]


def test_an_overridden_layout_is_every_languages_and_the_translation_fills_in_its_words(
    tmp_path: Path,
) -> None:
    """The shipped _base/fr/ holds only French words, in the layout's blocks: the operator's
    one layout serves French readers too, in French where it keeps the blocks."""
    folders = write(
        tmp_path,
        {"_base/body.txt": "{% block greeting %}Dear{% endblock %} {{ recipient.name }}!\n"
         "{% block content %}{% endblock %}\n-- {{ company_name }}\n"},
    )  # fmt: skip

    french = render_email("client_signup", BASE_CONTEXT, language="fr", folders=folders)
    english = render_email("client_signup", BASE_CONTEXT, folders=folders)

    assert french.text.startswith("Bonjour Ada Lovelace!\nMerci pour votre inscription")
    assert french.text.endswith("-- Test Hosting\n")
    assert english.text.startswith("Dear Ada Lovelace!\nThank you for signing up")


def test_the_variables_of_a_template_include_those_of_its_layout_and_includes() -> None:
    env = environment((TEMPLATES_DIR,))
    used = variables_used(env, ["invoice_created/body.txt"])
    # recipient, company and company_name come from _base, invoiced_to from the _invoice
    # include.
    assert used == {"company", "company_name", "invoice", "invoiced_to", "recipient"}


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object"),
        ("{{ recipient.__init__.__globals__ }}", "access to attribute '__init__' of 'dict'"),
        ("{{ '{0.__class__}'.format(company_name) }}", "access to attribute '__class__'"),
        ("{{ cycler.__init__.__globals__.os }}", "access to attribute '__init__' of 'type'"),
        # Immutable: one recipient's email cannot change what the next one is rendered from.
        ("{{ recipient.update(name='x') }}", "access to attribute 'update' of 'dict'"),
    ],
)
def test_the_sandbox_refuses_pythons_internals(tmp_path: Path, source: str, refused: str) -> None:
    folders = write(
        tmp_path,
        {"client_signup/subject.txt": "Welcome", "client_signup/body.txt": source},
    )
    with pytest.raises(TemplateError, match="refused by the sandbox") as caught:
        render_email("client_signup", BASE_CONTEXT, folders=folders)
    assert refused in caught.value.reason
    assert caught.value.reason.startswith("template 'client_signup' is refused by the sandbox:")


def test_a_dotted_name_reads_a_dicts_key_and_dicts_own_names_stay_its_methods(
    tmp_path: Path,
) -> None:
    # `invoice.items` was dict.items before the sandbox read keys directly, and still is:
    # that is why the shipped templates write invoice["items"].
    folders = write(
        tmp_path,
        {
            "client_signup/subject.txt": "Welcome",
            "client_signup/body.txt": (
                "{{ invoice.number }} {{ invoice.items is callable }} "
                "{{ invoice['items'] | length }} {{ invoice.get('number') }}"
            ),
        },
    )
    context = {**BASE_CONTEXT, "invoice": {"number": "42", "items": [1, 2]}}
    rendered = render_email("client_signup", context, folders=folders)
    assert rendered.text == "42 True 2 42"


def test_an_override_keeps_the_strict_checks(tmp_path: Path) -> None:
    folders = write(
        tmp_path,
        {
            "general_announcement/subject.txt": "{{ title }}\nBcc: victim@example.com",
            "client_signup/fr/subject.txt": "Bienvenue {{ client.nickname }}",
        },
    )
    context = {**BASE_CONTEXT, **SAMPLES["general_announcement"]}
    with pytest.raises(TemplateError, match=r"line break or control character \(U\+000A\)"):
        render_email("general_announcement", context, folders=folders)
    with pytest.raises(TemplateError, match=r"'client_signup \(fr\)' cannot render: .*nickname"):
        render_email("client_signup", BASE_CONTEXT, language="fr", folders=folders)


def test_a_new_template_missing_a_part_is_a_reason(tmp_path: Path) -> None:
    folders = write(tmp_path, {"maintenance/subject.txt": "Maintenance"})
    with pytest.raises(TemplateError, match=r"template 'maintenance' has no body\.txt, body\.html"):
        render_email("maintenance", BASE_CONTEXT, folders=folders)


def test_folders_are_read_once_per_process(tmp_path: Path) -> None:
    # Rendering is on every event's path: the catalogue is not scanned again for each email.
    # A template added later is seen after a restart (docs/templates.md).
    folders = write(tmp_path, {"client_signup/subject.txt": "Hello"})
    assert render_email("client_signup", BASE_CONTEXT, folders=folders).subject == "Hello"
    write(tmp_path, {"late/subject.txt": "x", "late/body.txt": "x", "late/body.html": "x"})
    with pytest.raises(TemplateError, match="unknown email template 'late'"):
        render_email("late", BASE_CONTEXT, folders=folders)
