"""Request and response bodies.  Requests forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from flowdeck.domain.accounts import USERNAME_RE, AuditEntry, Token, User
from flowdeck.domain.validation import Report
from flowdeck.domain.workflows import Visibility, Workflow
from flowdeck.security.passwords import MAX_LENGTH, MIN_LENGTH


class Request(BaseModel):
    """A request body: unknown fields are refused, and so are values of another JSON type
    (strict: ``true`` is not the integer 1, nor ``1`` the boolean true, nor ``"1"`` a
    number).  A number without a fraction (``5.0``) is an integer, as in JSON Schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {k: int(v) if _integral(v) else v for k, v in data.items()}


def _integral(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


# A new password: its length is in the document (and checked by the service, whose error
# says the rule); how guessable it is (zxcvbn) no schema can say.
NEW_PASSWORD: JsonDict = {"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH}


class Credentials(Request):
    # Patterns given as json_schema_extra are in the document and checked by the service,
    # whose errors name the field and say what is wrong.
    username: str = Field(
        description="3 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        json_schema_extra={"pattern": USERNAME_RE.pattern},
    )
    password: str = Field(min_length=1, max_length=1024, json_schema_extra=NEW_PASSWORD)


class LoginRequest(Credentials):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    cookie: bool = Field(
        False, description="Also set an HttpOnly session cookie (for browsers) and a CSRF cookie."
    )


class PasswordChange(Request):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024, json_schema_extra=NEW_PASSWORD)
    end_other_sessions: bool = Field(
        True,
        description="End every other session and API token of yours (default); this one "
        "goes on.  false keeps them.",
    )


class NewToken(Request):
    # ASCII classes, not \w: JSON Schema's patterns (ECMA-262) and pydantic's differ on \w.
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@:-][A-Za-z0-9_ .@:-]*$")
    expires_in_days: int = Field(
        90, ge=1, description="At most the server's api_token_max_days (365 by default)."
    )


class NewUser(Credentials):
    admin: bool = False


class NewPassword(Request):
    password: str = Field(min_length=1, max_length=1024, json_schema_extra=NEW_PASSWORD)


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


class PurgeOut(BaseModel):
    dry_run: bool = Field(description="true: what a purge now would remove; nothing changed.")
    runs: int = Field(description="Ended runs deleted (folder, record, events).")
    run_folders: int = Field(description="Ended runs whose folder alone was removed.")
    bytes: int = Field(description="Bytes in those runs' folders.")
    events: int
    deliveries: int = Field(description="Finished webhook deliveries.")
    audit: int = Field(description="Audit entries.")
    sample: list[str] = Field(description="Some of the runs' ids.")


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
    visibility: Visibility = Field(strict=False)  # strict would want a Visibility object
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
