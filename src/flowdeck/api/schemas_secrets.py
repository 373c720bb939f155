"""Request and response bodies of the secrets API: values go in, never out."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from flowdeck.api.schemas import Request
from flowdeck.domain.secrets import MAX_VALUE_BYTES
from flowdeck.services.secrets import SecretInfo


class SecretIn(Request):
    value: str = Field(
        min_length=1,
        max_length=MAX_VALUE_BYTES,
        description=f"The value (at most {MAX_VALUE_BYTES} bytes in UTF-8); write-only: "
        "no answer ever shows it.",
    )


class SecretOut(BaseModel):
    name: str
    owner: str = Field(description="The owner's username.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, info: SecretInfo) -> SecretOut:
        return cls(
            name=info.name,
            owner=info.owner,
            created_at=info.created_at,
            updated_at=info.updated_at,
        )


class SecretList(BaseModel):
    items: list[SecretOut]
