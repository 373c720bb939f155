"""Bodies of per-user quotas and usage (``/admin/users/{name}/quotas``, ``/auth/me``)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, Field

from flowdeck.api.schemas import Request, UserOut
from flowdeck.domain.quotas import Quota
from flowdeck.services.quotas import Usage, UserQuota


class QuotaValues(BaseModel):
    max_active_runs: int | None = Field(
        None, description="Most running runs; more wait queued (null: no limit)."
    )
    max_cpus: float | None = Field(
        None, description="Most CPU slots the user's steps hold at once (null: no limit)."
    )
    max_stored_bytes: int | None = Field(
        None, description="Most bytes of uploads and products; uploads past it get 413."
    )

    @classmethod
    def of(cls, quota: Quota) -> Self:
        return cls(**quota.as_dict())


class QuotaIn(Request):
    """Fields given are set (null: back to the server's default); others stay."""

    max_active_runs: int | None = Field(None, ge=1, le=1_000_000)
    max_cpus: float | None = Field(None, gt=0, le=1_000_000)
    max_stored_bytes: int | None = Field(None, ge=0, le=10**18)

    def changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.model_fields_set}


class UsageOut(BaseModel):
    active_runs: int = Field(description="Runs running, paused or stopping.")
    queued_runs: int
    stored_bytes: int = Field(description="Bytes of the user's uploads and products.")
    cpus: float = Field(
        0.0,
        description="CPU slots the user's running steps hold now (for one user's quota or "
        "`/auth/me`; 0 in the list of every user).",
    )

    @classmethod
    def of(cls, usage: Usage) -> Self:
        return cls(**usage.as_dict())


class UserQuotaOut(BaseModel):
    username: str
    quota: QuotaValues = Field(description="What applies: the override, else the default.")
    override: QuotaValues = Field(description="What an admin set for this user.")
    usage: UsageOut

    @classmethod
    def of(cls, q: UserQuota) -> Self:
        return cls(
            username=q.user.username,
            quota=QuotaValues.of(q.quota),
            override=QuotaValues.of(q.override),
            usage=UsageOut.of(q.usage),
        )


class MeOut(UserOut):
    quota: QuotaValues
    usage: UsageOut

    @classmethod
    def with_usage(cls, q: UserQuota) -> Self:
        return cls(
            **UserOut.of(q.user).model_dump(),
            quota=QuotaValues.of(q.quota),
            usage=UsageOut.of(q.usage),
        )
