"""Accounts: registration, sessions, passwords and API tokens; for admins, the accounts
of everyone and the audit log."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from flowdeck.client._async.http import AsyncHTTP
from flowdeck.client._backend import AsyncStream
from flowdeck.client._shared import API, USER_ACTIONS, Query, present


class AsyncAccounts(AsyncHTTP):
    """The account half of the client (:class:`AsyncClient` adds the rest)."""

    # -- your account ---------------------------------------------------------------------
    async def register(self, username: str, password: str) -> dict[str, Any]:
        """Create an account (the server's registration setting decides whether it is
        active at once)."""
        body = {"username": username, "password": password}
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/register", json=body)
        return result

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; the client uses the returned token from now on."""
        body = {"username": username, "password": password}
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/login", json=body)
        self.token = result["token"]
        return result

    async def logout(self) -> None:
        """End the session of the token; the client forgets it."""
        await self.request("POST", f"{API}/auth/logout")
        self.token = None

    async def me(self) -> dict[str, Any]:
        """The account the token belongs to, with its quotas and usage of them."""
        result: dict[str, Any] = await self.request("GET", f"{API}/auth/me")
        return result

    async def health(self) -> dict[str, Any]:
        """The server's health (no login needed)."""
        result: dict[str, Any] = await self.request("GET", "/healthz")
        return result

    async def change_password(
        self, current: str, new: str, *, end_other_sessions: bool = True
    ) -> dict[str, Any]:
        """Change your password (``{ended_sessions}``): every other session and API token
        of yours ends, unless ``end_other_sessions=False``; this client's goes on."""
        body = {
            "current_password": current,
            "new_password": new,
            "end_other_sessions": end_other_sessions,
        }
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/password", json=body)
        return result

    async def create_token(self, name: str, expires_in_days: int = 90) -> dict[str, Any]:
        """A named API token for scripts: its secret is the answer's ``token``, shown only
        now."""
        body = {"name": name, "expires_in_days": expires_in_days}
        result: dict[str, Any] = await self.request("POST", f"{API}/auth/tokens", json=body)
        return result

    async def tokens(self) -> list[dict[str, Any]]:
        """Your tokens (sessions and API tokens), newest first, without their secrets."""
        result: list[dict[str, Any]] = await self.request("GET", f"{API}/auth/tokens")
        return result

    async def revoke_token(self, token_id: str) -> None:
        """End a token of yours at once."""
        await self.request("DELETE", f"{API}/auth/tokens/{token_id}")

    # -- administration (admins) ----------------------------------------------------------
    async def users(self) -> list[dict[str, Any]]:
        """Every account (admins)."""
        result: list[dict[str, Any]] = await self.request("GET", f"{API}/admin/users")
        return result

    async def create_user(
        self, username: str, password: str, *, admin: bool = False
    ) -> dict[str, Any]:
        """Create an active account, an admin one with ``admin`` (admins)."""
        body = {"username": username, "password": password, "admin": admin}
        result: dict[str, Any] = await self.request("POST", f"{API}/admin/users", json=body)
        return result

    async def change_user(self, username: str, action: str) -> dict[str, Any]:
        """``approve`` a pending account, ``disable`` one (its sessions end at once),
        ``enable`` it again, ``promote`` it to admin or ``demote`` it (admins)."""
        if action not in USER_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(USER_ACTIONS)}, not {action!r}")
        result: dict[str, Any] = await self.request(
            "POST", f"{API}/admin/users/{username}/{action}"
        )
        return result

    async def reset_password(self, username: str, password: str) -> dict[str, Any]:
        """Set an account's password; its sessions end (admins)."""
        result: dict[str, Any] = await self.request(
            "PUT", f"{API}/admin/users/{username}/password", json={"password": password}
        )
        return result

    async def quotas(self, username: str | None = None) -> Any:
        """A user's quotas and usage, or (no ``username``) every user's (admins)."""
        path = f"{API}/admin/users/{username}/quotas" if username else f"{API}/admin/quotas"
        return await self.request("GET", path)

    async def set_quotas(self, username: str, **values: int | float | None) -> dict[str, Any]:
        """Override the server's default quotas for a user: ``max_active_runs``,
        ``max_cpus``, ``max_stored_bytes`` (None: back to the default); those not given
        stay (admins)."""
        result: dict[str, Any] = await self.request(
            "PUT", f"{API}/admin/users/{username}/quotas", json=values
        )
        return result

    async def delete_user(self, username: str) -> None:
        """Delete an account (admins)."""
        await self.request("DELETE", f"{API}/admin/users/{username}")

    async def iter_audit(
        self, action: str | None = None, limit: int | None = None
    ) -> AsyncStream[dict[str, Any]]:
        """The audit log, newest first (only ``action`` entries if given), fetched a page
        at a time as it is iterated (admins)."""
        query: Query = list(present(action=action).items())
        async with aclosing(self.pages(f"{API}/admin/audit", query, limit, "entries")) as items:
            async for item in items:
                yield item

    async def audit(
        self, action: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Logins, failed logins, tokens, admin actions: newest first, at most ``limit``
        (``None``: all) (admins)."""
        query: Query = list(present(action=action).items())
        return await self.collect(f"{API}/admin/audit", query, limit, "entries")
