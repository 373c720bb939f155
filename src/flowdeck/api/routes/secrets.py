"""/api/v1/secrets: the caller's secrets, write-only (names and dates come back, values
never); an admin may list and delete another user's (``?owner=``), not read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from flowdeck.api.deps import ActorDep, CtxDep
from flowdeck.api.schemas_secrets import SecretIn, SecretList, SecretOut
from flowdeck.domain.secrets import NAME_PATTERN

router = APIRouter(tags=["secrets"])
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="The secret's name.")]
Owner = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$",
        description="Admins: another user's secrets (by username).",
    ),
]


@router.put(
    "/secrets/{name}",
    response_model=SecretOut,
    responses={201: {"model": SecretOut, "description": "Created"}},
)
def put_secret(
    name: Name, body: SecretIn, ctx: CtxDep, actor: ActorDep, response: Response
) -> SecretOut:
    """Create (201) or replace (200) one of your secrets."""
    info, created = ctx.secrets.set(actor, name, body.value)
    response.status_code = 201 if created else 200
    return SecretOut.of(info)


@router.get("/secrets", response_model=SecretList)
def list_secrets(ctx: CtxDep, actor: ActorDep, owner: Owner = None) -> SecretList:
    """Your secrets' names and dates, by name."""
    return SecretList(items=[SecretOut.of(i) for i in ctx.secrets.list(actor, owner)])


@router.get("/secrets/{name}", response_model=SecretOut)
def get_secret(name: Name, ctx: CtxDep, actor: ActorDep, owner: Owner = None) -> SecretOut:
    """A secret's name and dates (never its value)."""
    return SecretOut.of(ctx.secrets.get(actor, name, owner))


@router.delete("/secrets/{name}", status_code=204)
def delete_secret(name: Name, ctx: CtxDep, actor: ActorDep, owner: Owner = None) -> None:
    ctx.secrets.delete(actor, name, owner)
