"""The synchronous client."""

from __future__ import annotations

from typing import Any

import httpx

from flowdeck.client.errors import ConnectionFailed, raise_for

API = "/api/v1"


class Client:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                0, "connection_failed", f"cannot reach flowdeck at {self.base_url}: {exc}"
            ) from exc
        raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- accounts -------------------------------------------------------------------------
    def register(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        result: dict[str, Any] = self.request("POST", f"{API}/auth/register", json=body)
        return result

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; the client uses the returned token from now on."""
        body = {"username": username, "password": password}
        result: dict[str, Any] = self.request("POST", f"{API}/auth/login", json=body)
        self.token = result["token"]
        return result

    def logout(self) -> None:
        self.request("POST", f"{API}/auth/logout")
        self.token = None

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{API}/auth/me")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result
