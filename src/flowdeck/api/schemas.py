"""Request and response bodies.  Requests forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flowdeck.domain.accounts import AuditEntry, Token, User
from flowdeck.domain.validation import Report
from flowdeck.domain.workflows import Visibility, Workflow


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


class WorkflowSummary(BaseModel):
    id: str
    ref: str = Field(description="owner/name@version")
    owner: str
    name: str
    version: str
    description: str
    visibility: Visibility
    trusted: bool
    has_archive: bool
    content_hash: str
    created_at: datetime

    @classmethod
    def of(cls, wf: Workflow) -> WorkflowSummary:
        return cls(
            id=wf.id,
            ref=wf.ref,
            owner=wf.owner_name,
            name=wf.name,
            version=wf.version,
            description=wf.description,
            visibility=wf.visibility,
            trusted=wf.trusted,
            has_archive=wf.has_archive,
            content_hash=wf.content_hash,
            created_at=wf.created_at,
        )


class WorkflowOut(WorkflowSummary):
    spec: dict[str, Any] = Field(description="The validated spec, in canonical JSON form.")
    source: str = Field(description="The document as pushed.")
    shared_with: list[str] | None = Field(
        None, description="Usernames it is shared with (shown to its owner and admins)."
    )

    @classmethod
    def of(cls, wf: Workflow, shared_with: list[str] | None = None) -> WorkflowOut:
        base = WorkflowSummary.of(wf).model_dump()
        return cls(**base, spec=wf.spec, source=wf.source, shared_with=shared_with)


class WorkflowPage(BaseModel):
    items: list[WorkflowSummary]
    next_before: str | None


class VisibilityChange(Request):
    visibility: Visibility
    users: list[str] | None = Field(
        None, max_length=1000, description="With shared: the usernames (replaces the list)."
    )


class TrustChange(Request):
    trusted: bool


class ProblemOut(BaseModel):
    path: str
    line: int | None
    column: int | None
    message: str


class ValidationOut(BaseModel):
    valid: bool
    errors: list[ProblemOut]
    name: str | None = None
    version: str | None = None
    steps: list[str] | None = Field(None, description="The steps in a dependency order.")

    @classmethod
    def of(cls, report: Report) -> ValidationOut:
        wf = report.workflow
        return cls(
            valid=report.ok,
            errors=[ProblemOut(**p.as_dict()) for p in report.problems],
            name=wf.spec.name if wf else None,
            version=wf.spec.version if wf else None,
            steps=list(wf.order) if wf else None,
        )
