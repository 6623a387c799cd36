"""What ops records keep of personal data: no addresses in errors, ids only in task events."""

from __future__ import annotations

from services.redaction import ids_only, redact_addresses
from services.rejections import printable


def test_addresses_in_error_text_are_hidden() -> None:
    text = "550 5.1.1 <ada@example.org>: unknown; also bob.smith+x@mail.co.uk refused"
    assert redact_addresses(text) == "550 5.1.1 <<address>>: unknown; also <address> refused"
    assert redact_addresses("no address: 12:30 at the @ desk") == (
        "no address: 12:30 at the @ desk"
    )


def test_task_arguments_are_shown_as_their_ids_only() -> None:
    kwargs = {"event_id": "e1", "client_id": "C1", "firstname": "Ada", "email": "a@b.example"}
    assert ids_only(kwargs) == "{event_id='e1', client_id='C1', +2 fields}"
    assert ids_only({"message_ids": ["m1"]}) == "{message_ids=['m1']}"
    assert ids_only({"email": "a@b.example"}) == "{+1 fields}"


def test_printable_text_never_exceeds_its_column() -> None:
    for size in (127, 128, 129, 300):
        cut = printable("e" * size, 128)
        assert len(cut) <= 128
        assert cut == "e" * size if size <= 128 else cut.endswith(f"... [{size} chars]")
