"""The CLI's saved tokens: one per server, and the last server logged in to or out of (the
default one), in the user's config directory, mode 0600."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import platformdirs

DEFAULT_SERVER = "http://127.0.0.1:8080"


def credentials_path() -> Path:
    return Path(platformdirs.user_config_dir("flowdeck")) / "credentials.json"


def _load() -> dict[str, Any]:
    try:
        data = json.loads(credentials_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"servers": {}}
    return data if isinstance(data, dict) and "servers" in data else {"servers": {}}


def _save(data: dict[str, Any]) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_server(server: str | None) -> str:
    """``--server``, else ``FLOWDECK_URL``, else the last server logged in to or out of,
    else local."""
    chosen = server or os.environ.get("FLOWDECK_URL") or _load().get("default") or DEFAULT_SERVER
    return str(chosen).rstrip("/")


def saved_token(server: str) -> str | None:
    entry = _load()["servers"].get(server)
    return entry.get("token") if isinstance(entry, dict) else None


def save_token(server: str, username: str, token: str, expires_at: str) -> None:
    data = _load()
    data["servers"][server] = {"username": username, "token": token, "expires_at": expires_at}
    data["default"] = server
    _save(data)


def forget(server: str) -> bool:
    """Drop the token of ``server``; it stays the default server (the last one used), so
    that ``whoami`` or ``login`` next speak of it."""
    data = _load()
    found = data["servers"].pop(server, None) is not None
    if found or data.get("default") != server:
        data["default"] = server
        _save(data)
    return found
