"""The public event contract: strict validation with specific reasons, and its JSON Schema."""

from __future__ import annotations

from typing import Annotated, Any

import payloads
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    EmailStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from models.contracts import EVENTS, json_schemas
from models.contracts.common import Email, sendable_address
from services.dispatch import parse_event
from services.errors import Rejected


def reason_for(task: str, payload: dict[str, Any]) -> str:
    with pytest.raises(Rejected) as info:
        parse_event(task, payload)
    return info.value.reason


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"email": "not-an-email"}, "email: value is not a valid email address"),
        (
            {"firstname": "Ada\r\nBcc: victim@example.com"},
            "firstname: Value error, must be a single line without control characters",
        ),
        ({"lastname": "x" * 101}, "lastname: String should have at most 100 characters"),
        ({"country": "XX"}, "country: Value error, 'XX' is not an ISO 3166-1 alpha-2"),
        ({"firstname": 123}, "firstname: Input should be a valid string"),
        ({"send_welcome": "perhaps"}, "send_welcome: Input should be a valid boolean"),
        ({"shoe_size": 42}, "shoe_size: Extra inputs are not permitted"),
        ({"client_id": "has space"}, "client_id: String should match pattern"),
        ({"phonenumber": "call me"}, "phonenumber: String should match pattern"),
        ({"actor": {"kind": "client"}}, "actor: Value error, a client actor must carry client_id"),
        ({"actor": {"kind": "root"}}, "actor.kind: Input should be 'admin', 'client' or 'system'"),
        ({"notes": "ok\nbut \x07 bell"}, "notes: Value error, must not contain control characters"),
    ],
)
def test_add_client_refusals_are_specific(overrides: dict[str, Any], expected: str) -> None:
    reason = reason_for("clients.add", {**payloads.client("C1"), **overrides})
    assert reason.startswith("invalid event: ")
    assert expected in reason


def test_missing_fields_all_named() -> None:
    reason = reason_for("clients.add", {"event_id": "e1", "client_id": "C1"})
    for name in (
        "firstname",
        "lastname",
        "email",
        "address1",
        "city",
        "state",
        "postcode",
        "country",
        "phonenumber",
    ):
        assert f"{name}: Field required" in reason


def test_reason_does_not_echo_huge_input() -> None:
    reason = reason_for("clients.add", payloads.client("C1", city="x" * 1_000_000))
    assert reason == "invalid event: city: String should have at most 100 characters"


def test_notes_keep_newlines_and_country_is_normalised() -> None:
    event = parse_event("clients.add", payloads.client("C1", notes="a\nb", country="de"))
    assert event.model_dump()["notes"] == "a\nb"
    assert event.model_dump()["country"] == "DE"


def test_update_must_change_something() -> None:
    assert reason_for("clients.update", payloads.event("C1")) == (
        "invalid event: payload: Value error, names no field to change"
    )


def test_status_is_not_an_update_field() -> None:
    reason = reason_for("clients.update", payloads.event("C1", status="Closed"))
    assert "status: Extra inputs are not permitted" in reason


def test_notification_context_is_bounded_and_cannot_spoof() -> None:
    big = reason_for("notifications.send", payloads.notification(context={"x": "y" * 20_000}))
    spoof = reason_for("notifications.send", payloads.notification(context={"client": {}}))
    # The renderer sets the email's locale from the client's language (docs/templates.md).
    locale = reason_for("notifications.send", payloads.notification(context={"locale": "de"}))
    assert "context: Value error, is 20" in big
    assert "reserved names ['client']" in spoof
    assert "reserved names ['locale']" in locale
    # The sender's name, address and links (the email layout, docs/templates.md).
    company = reason_for("notifications.send", payloads.notification(context={"company": {}}))
    assert "reserved names ['company']" in company


def test_unknown_event_refused() -> None:
    assert reason_for("clients.delete_everything", {"event_id": "e1"}) == (
        "unknown event 'clients.delete_everything'"
    )


def test_every_event_has_a_strict_schema_with_envelope() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(EVENTS)
    for name, schema in schemas.items():
        assert schema["additionalProperties"] is False, name
        # recipients.unsubscribe may leave client_id out: its token names the client.
        envelope = {"event_id"} if name == "recipients.unsubscribe" else {"event_id", "client_id"}
        assert envelope <= set(schema["required"]), name
        assert {"actor", "client_id"} <= set(schema["properties"]), name


# Values a hostile or broken publisher could put in any field of a JSON payload.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    task=st.sampled_from(sorted(EVENTS)),
    field=st.sampled_from(
        [
            "event_id",
            "client_id",
            "contact_id",
            "firstname",
            "email",
            "country",
            "status",
            "category",
            "template",
            "context",
            "actor",
            "general",
            "send_welcome",
            "unexpected",
        ]
    ),
    value=json_values,
)
def test_any_json_value_is_either_valid_or_refused_with_a_reason(
    task: str, field: str, value: Any
) -> None:
    base = {
        **payloads.client("C1"),
        **payloads.contact("K1", "C1"),
        **payloads.notification("C1"),
        "status": "Active",
    }
    model = EVENTS[task]
    payload = {k: v for k, v in base.items() if k in model.model_fields}
    payload[field] = value
    # Anything but a valid event or a Rejected with a reason (TypeError, KeyError...) fails here.
    try:
        parse_event(task, payload)
        reason = "valid"
    except Rejected as exc:
        reason = exc.reason
    assert reason.strip()


@pytest.mark.parametrize(
    ("email", "stored"),
    [
        ("billing@xn--bcher-kva.example", "billing@xn--bcher-kva.example"),
        ("billing@bücher.example", "billing@xn--bcher-kva.example"),
        ("Ada@Example.COM", "Ada@example.com"),
    ],
)
def test_addresses_are_kept_as_smtp_carries_them(email: str, stored: str) -> None:
    event = parse_event("clients.add", payloads.client("C1", email=email))
    assert getattr(event, "email") == stored  # noqa: B009  (the event's type is the base)


@pytest.mark.parametrize("email", ["İnx@example.org", "ü@example.org"])
def test_a_mailbox_that_needs_smtputf8_is_refused(email: str) -> None:
    reason = reason_for("clients.add", payloads.client("C1", email=email))
    assert reason.startswith("invalid event: email: Value error, cannot be sent to: ")


def test_notification_context_nesting_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(16):
        deep = {"d": deep}
    parse_event("notifications.send", payloads.notification(context=deep))  # 16 levels: fine
    reason = reason_for("notifications.send", payloads.notification(context={"d": deep}))
    assert reason == "invalid event: context: Value error, nests 17 levels deep; the limit is 16"


def test_a_client_actor_may_not_set_notes() -> None:
    payload = payloads.event("C1", actor=payloads.client_actor("C1"), notes="VIP")
    reason = reason_for("clients.update", payload)
    assert reason.endswith("notes are for admins only; a client actor may not set them")
    parse_event("clients.update", {**payload, "actor": {"kind": "admin"}})


def test_sendable_address_is_the_same_when_asked_again_and_refuses_each_time() -> None:
    # Cached (a pure function of the text): a second answer is the first one, and a refusal
    # is never remembered as an answer.
    assert sendable_address("Ada@Bücher.example") == "Ada@xn--bcher-kva.example"
    assert sendable_address("Ada@Bücher.example") == "Ada@xn--bcher-kva.example"
    for _ in range(2):
        with pytest.raises(ValueError, match="cannot be sent to"):
            sendable_address("zoë@example.com")


# The Email type before plain ASCII mailboxes skipped the second parse (every address
# through sendable_address after EmailStr): the answer must not have changed.
_PARSED_TWICE: TypeAdapter[str] = TypeAdapter(
    Annotated[EmailStr, StringConstraints(max_length=254), AfterValidator(sendable_address)]
)
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)


def _outcome(adapter: TypeAdapter[str], value: str) -> str:
    try:
        return "stored as " + adapter.validate_python(value)
    except ValidationError:
        return "refused"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.emails(),
        st.builds(
            "{}@{}".format,
            st.text("aZ09.!#$%&'*+/=?^_`{|}~-\"(),: ü", min_size=1, max_size=70),
            st.text("aZ09.-ü_", min_size=1, max_size=70),
        ),
    )
)
def test_the_email_type_stores_and_refuses_what_two_parses_did(value: str) -> None:
    assert _outcome(_EMAIL, value) == _outcome(_PARSED_TWICE, value)


@pytest.mark.parametrize(
    "value",
    [
        "Ada@Example.COM", "ada@localhost", "ada@host.test", "ada@1.2.3.4", "a" * 65 + "@ex.com",
        "ada@" + "b" * 64 + ".example", "ada..b@example.com", "ada@bücher.example", "x@y.example",
    ],
)  # fmt: skip
def test_the_email_type_agrees_with_two_parses_on_the_edges(value: str) -> None:
    assert _outcome(_EMAIL, value) == _outcome(_PARSED_TWICE, value)
