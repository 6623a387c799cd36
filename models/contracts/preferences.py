"""Email preferences: clients.set_email_preferences (the holder's own choice per category) and
recipients.unsubscribe (what a one-click unsubscribe link's handler publishes)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from models.contracts.common import Event, refuse_nulls
from models.contracts.contacts import CATEGORY_FIELDS
from models.contracts.unsubscribe_token import MAX_TOKEN_CHARS, read_client_id


class SetEmailPreferences(Event):
    """The holder's flags: only the categories present change; true receives, false opts out."""

    general: bool | None = None
    product: bool | None = None
    domain: bool | None = None
    invoice: bool | None = None
    support: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> SetEmailPreferences:
        refuse_nulls(self, frozenset(CATEGORY_FIELDS))
        if not self.choices():
            raise ValueError(f"names no category to set; give any of {', '.join(CATEGORY_FIELDS)}")
        return self

    def choices(self) -> dict[str, bool]:
        """{category: receives} for the categories the event names."""
        return {
            name: bool(getattr(self, name))
            for name in CATEGORY_FIELDS
            if name in self.model_fields_set
        }


UnsubscribeTokenText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TOKEN_CHARS, pattern=r"^[A-Za-z0-9_.-]+$"),
]


def _client_id_optional(schema: JsonDict) -> None:
    """The schema says what the validator below allows: client_id may be left out."""
    required = schema.get("required")
    if isinstance(required, list):
        schema["required"] = [name for name in required if name != "client_id"]
    properties = schema.get("properties")
    client_id = properties.get("client_id") if isinstance(properties, dict) else None
    if isinstance(client_id, dict):
        client_id["description"] = (
            "Optional: the token names the client; when given, it must be the token's."
        )


class UnsubscribeRecipient(Event):
    """The token alone is enough: a link's handler need not know the client, the token says.

    client_id, when given, must be the token's own (checked by the handler, against the
    verified token); left out, it is read from the token.
    """

    model_config = ConfigDict(json_schema_extra=_client_id_optional)

    token: UnsubscribeTokenText = Field(
        description="The token of the List-Unsubscribe URL, as clientflow issued it."
    )

    @model_validator(mode="before")
    @classmethod
    def _client_from_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "client_id" not in data and "token" in data:
            client_id = read_client_id(data["token"])
            if client_id is None:
                raise ValueError(
                    "token is not an unsubscribe token clientflow issued (no client can be "
                    "read from it), and no client_id was given"
                )
            return {**data, "client_id": client_id}
        return data
