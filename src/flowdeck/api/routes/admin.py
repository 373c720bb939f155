"""/api/v1/admin: user administration, quotas and the audit log (admin role only)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from starlette.convertors import Convertor, register_url_convertor

from flowdeck.api.deps import AddressDep, AdminDep, CtxDep
from flowdeck.api.schemas import AuditOut, AuditPage, NewPassword, NewUser, PurgeOut, UserOut
from flowdeck.api.schemas_quotas import QuotaIn, UserQuotaOut
from flowdeck.domain.accounts import Role
from flowdeck.errors import Conflict
from flowdeck.services.status import summary

router = APIRouter(prefix="/admin", tags=["admin"])
UserAction = Literal["approve", "enable", "disable", "promote", "demote"]


class _ActionConvertor(Convertor[str]):
    """Any segment but ``password`` and ``quotas`` matches ``/users/{username}/{action}``
    (an unknown action is a 422 naming the ones there are): ``POST …/password`` is the
    method ``/users/{username}/password`` does not take (405), not an unknown action."""

    regex = "(?!(?:password|quotas)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("user_action", _ActionConvertor())


@router.get("/users", response_model=list[UserOut])
def list_users(actor: AdminDep, ctx: CtxDep) -> list[UserOut]:
    return [UserOut.of(u) for u in ctx.accounts.list_users(actor)]


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: NewUser, actor: AdminDep, ctx: CtxDep, address: AddressDep) -> UserOut:
    """Create an active account (an admin one with `admin: true`)."""
    user = ctx.accounts.create_user(
        body.username, body.password, admin=body.admin, actor=actor, address=address
    )
    return UserOut.of(user)


@router.post("/users/{username}/{action:user_action}", response_model=UserOut)
def change_user(
    username: str,
    action: UserAction,
    actor: AdminDep,
    ctx: CtxDep,
    address: AddressDep,
) -> UserOut:
    """`approve` a pending account, `disable` one (its sessions end at once; its active runs
    go on), `enable` it again, `promote` to admin or `demote` to user."""
    if action in ("promote", "demote"):
        role = Role.ADMIN if action == "promote" else Role.USER
        return UserOut.of(ctx.accounts.set_role(actor, username, role, address))
    return UserOut.of(ctx.accounts.set_status(actor, username, action, address))


@router.put("/users/{username}/password", response_model=UserOut)
def reset_password(
    username: str, body: NewPassword, actor: AdminDep, ctx: CtxDep, address: AddressDep
) -> UserOut:
    """Set a new password; every session of the account ends."""
    return UserOut.of(ctx.accounts.reset_password(actor, username, body.password, address))


@router.get("/status")
def status(actor: AdminDep, ctx: CtxDep) -> dict[str, Any]:
    """What `flowdeck admin status` shows: instances, queue, slots, active runs, disk
    (stored bytes per user and in total, free space) and recent failures."""
    return summary(ctx.store, ctx.settings).as_dict()


@router.get("/quotas", response_model=list[UserQuotaOut])
def list_quotas(actor: AdminDep, ctx: CtxDep) -> list[UserQuotaOut]:
    """Every user's quotas and usage."""
    return [UserQuotaOut.of(q) for q in ctx.quotas.list(actor)]


@router.get("/users/{username}/quotas", response_model=UserQuotaOut)
def get_quotas(username: str, actor: AdminDep, ctx: CtxDep) -> UserQuotaOut:
    """A user's quotas (the override and what applies) and usage."""
    return UserQuotaOut.of(ctx.quotas.show(actor, username))


@router.put("/users/{username}/quotas", response_model=UserQuotaOut)
def set_quotas(
    username: str, body: QuotaIn, actor: AdminDep, ctx: CtxDep, address: AddressDep
) -> UserQuotaOut:
    """Override the server's default quotas for a user: each field given is set (null:
    back to the default), the others stay."""
    return UserQuotaOut.of(ctx.quotas.set(actor, username, body.changes(), address))


@router.delete("/users/{username}", status_code=204)
def delete_user(username: str, actor: AdminDep, ctx: CtxDep, address: AddressDep) -> Response:
    ctx.accounts.delete_user(actor, username, address)
    return Response(status_code=204)


@router.get("/audit", response_model=AuditPage)
def audit(
    actor: AdminDep,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Entries older than this id.")
    ] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    """Logins, failed logins, token creation and revocation, admin actions: newest first."""
    entries = ctx.accounts.audit(actor, limit=limit, before_id=before, action=action)
    next_before = entries[-1].id if len(entries) == limit else None
    return AuditPage(entries=[AuditOut.of(e) for e in entries], next_before=next_before)


@router.get("/purge", response_model=PurgeOut)
def purge_plan(actor: AdminDep, ctx: CtxDep) -> PurgeOut:
    """What retention would delete now (a dry run: nothing changes)."""
    del actor
    return PurgeOut.model_validate(dataclasses.asdict(ctx.retention.plan()))


@router.post("/purge", response_model=PurgeOut)
def purge_now(actor: AdminDep, ctx: CtxDep) -> PurgeOut:
    """Delete now what retention lets go (409 while another server of the database purges)."""
    del actor
    report = ctx.retention.purge()
    if report is None:
        raise Conflict("another server of this database is purging now; try again later")
    return PurgeOut.model_validate(dataclasses.asdict(report))
