"""/api/v1/auth: register, login, logout, me, password, named API tokens."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response

from flowdeck import clock
from flowdeck.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AddressDep,
    CtxDep,
    PrincipalDep,
)
from flowdeck.api.schemas import (
    Credentials,
    LoginOut,
    LoginRequest,
    NewToken,
    NewTokenOut,
    PasswordChange,
    PasswordChanged,
    TokenOut,
    UserOut,
)
from flowdeck.api.schemas_quotas import MeOut
from flowdeck.services.accounts import expires_in

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", status_code=201, response_model=UserOut)
def register(body: Credentials, ctx: CtxDep, address: AddressDep) -> UserOut:
    """Create an account.  Its status is `active` when registration is open, `pending`
    (until an admin approves it) in approval mode; closed mode answers 403."""
    return UserOut.of(ctx.accounts.register(body.username, body.password, address))


@router.post("/login", response_model=LoginOut)
def login(
    body: LoginRequest, ctx: CtxDep, address: AddressDep, request: Request, response: Response
) -> LoginOut:
    """Exchange username and password for a bearer token (and, with `cookie: true`, a
    browser session cookie plus a CSRF token to echo in `X-CSRF-Token`)."""
    issued = ctx.accounts.login(body.username, body.password, address)
    user = ctx.accounts.authenticate(issued.secret).user
    csrf = None
    if body.cookie:
        secure = ctx.settings.tls or request.url.scheme == "https"
        max_age = expires_in(issued.token)
        csrf = secrets.token_urlsafe(32)
        response.set_cookie(
            SESSION_COOKIE,
            issued.secret,
            max_age=max_age,
            httponly=True,
            secure=secure,
            samesite="strict",
            path="/",
        )
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=max_age,
            httponly=False,
            secure=secure,
            samesite="strict",
            path="/",
        )
    return LoginOut(
        token=issued.secret,
        expires_at=issued.token.expires_at,
        expires_in=expires_in(issued.token, clock.now()),
        user=UserOut.of(user),
        csrf_token=csrf,
    )


@router.post("/logout", status_code=204)
def logout(principal: PrincipalDep, ctx: CtxDep, address: AddressDep) -> Response:
    """End this session: the token is refused from now on."""
    ctx.accounts.logout(principal, address)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=MeOut)
def me(principal: PrincipalDep, ctx: CtxDep) -> MeOut:
    """Who you are, your quotas and your usage of them."""
    return MeOut.with_usage(ctx.quotas.mine(principal.user))


@router.post("/password", response_model=PasswordChanged)
def change_password(
    body: PasswordChange, principal: PrincipalDep, ctx: CtxDep, address: AddressDep
) -> PasswordChanged:
    """Change your password.  Every other session and API token of yours ends, unless
    `end_other_sessions` is false; the session making the change goes on."""
    ended = ctx.accounts.change_password(
        principal,
        body.current_password,
        body.new_password,
        end_other_sessions=body.end_other_sessions,
        address=address,
    )
    return PasswordChanged(ended_sessions=ended)


@router.post("/tokens", status_code=201, response_model=NewTokenOut)
def create_token(
    body: NewToken, principal: PrincipalDep, ctx: CtxDep, address: AddressDep
) -> NewTokenOut:
    """A named API token for scripts; its secret is shown only in this response."""
    issued = ctx.accounts.create_api_token(principal, body.name, body.expires_in_days, address)
    return NewTokenOut(token=issued.secret, **TokenOut.of(issued.token).model_dump())


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(principal: PrincipalDep, ctx: CtxDep) -> list[TokenOut]:
    """Your tokens (sessions and API tokens), newest first; secrets are never shown."""
    return [TokenOut.of(t) for t in ctx.accounts.list_tokens(principal)]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: str, principal: PrincipalDep, ctx: CtxDep, address: AddressDep
) -> Response:
    ctx.accounts.revoke_token(principal, token_id, address)
    return Response(status_code=204)
