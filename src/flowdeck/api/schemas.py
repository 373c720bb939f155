"""Request and response bodies.  Requests forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowdeck.domain.accounts import AuditEntry, Token, User


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginRequest(Credentials):
    cookie: bool = Field(
        False, description="Also set an HttpOnly session cookie (for browsers) and a CSRF cookie."
    )


class PasswordChange(Request):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)
    end_other_sessions: bool = False


class NewToken(Request):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@:-][\w .@:-]*$")
    expires_in_days: int = Field(90, ge=1)


class NewUser(Credentials):
    admin: bool = False


class NewPassword(Request):
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    status: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            role=user.role.value,
            status=user.status.value,
            created_at=user.created_at,
        )


class LoginOut(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105
    expires_at: datetime
    expires_in: int
    user: UserOut
    csrf_token: str | None = None


class TokenOut(BaseModel):
    id: str
    kind: str
    name: str | None
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: Token) -> TokenOut:
        return cls(
            id=token.id,
            kind=token.kind.value,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret; shown only in this response.")


class PasswordChanged(BaseModel):
    ended_sessions: int


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor_id: str | None
    actor_name: str | None
    action: str
    target: str | None
    address: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id,
            at=entry.at,
            actor_id=entry.actor_id,
            actor_name=entry.actor_name,
            action=entry.action,
            target=entry.target,
            address=entry.address,
            details=entry.details,
        )


class AuditPage(BaseModel):
    entries: list[AuditOut]
    next_before: int | None = Field(
        description="Pass as 'before' to get the next (older) page; null at the end."
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    error: ErrorBody
