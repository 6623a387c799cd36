"""notifications.send: one template, routed by category to the holder and ticked contacts."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from models.contracts.common import MAX_JSON_DEPTH, Category, Event, json_depth

TemplateName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
]
# Context travels through the broker and into the message log; keep it small.
MAX_CONTEXT_BYTES = 16_384


class SendNotification(Event):
    category: Category
    template: TemplateName = Field(description="A folder under templates/email.")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Variables for the template (JSON values)."
    )

    @field_validator("context")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        depth = json_depth(value)
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
        text = json.dumps(value, ensure_ascii=False)
        if "\\u0000" in text:
            raise ValueError("must not contain NUL characters")
        size = len(text.encode())
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"is {size} bytes of JSON; the limit is {MAX_CONTEXT_BYTES}")
        # What every email is given; `locale` is the client's, set by the renderer.
        reserved = {"client", "recipient", "company_name", "company", "locale"} & value.keys()
        if reserved:
            raise ValueError(f"must not set reserved names {sorted(reserved)}")
        return value
