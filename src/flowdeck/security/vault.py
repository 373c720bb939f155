"""Encryption at rest of what flowdeck keeps for its users (their secrets, webhook signing
secrets), with Fernet from ``cryptography``.

The key file (setting ``secret_key_file``) holds one or more Fernet keys, one per line:
the first encrypts, every one decrypts (:class:`~cryptography.fernet.MultiFernet`).  To
rotate: add a new first line, run ``flowdeck admin rotate-secrets`` (re-encrypts every
value with it), then drop the old line.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from flowdeck.errors import ConfigError, FlowdeckError

log = logging.getLogger("flowdeck.security")


class SecretUnreadable(FlowdeckError):
    """A stored secret cannot be decrypted with the keys of secret_key_file."""

    code = "secret_unreadable"


def create_key_file(path: Path) -> bool:
    """Write a new key to ``path`` (mode 0600) unless it exists; True when written.  The
    file appears complete or not at all (written aside, then linked), so two servers
    starting at once agree on one key."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    log.info("created the secret key file %s (back it up, apart from the database)", path)
    return True


def read_keys(path: Path) -> list[bytes]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret key file {path}: {exc}") from exc
    keys = [line.strip().encode() for line in text.splitlines() if line.strip()]
    keys = [k for k in keys if not k.startswith(b"#")]
    if not keys:
        raise ConfigError(f"the secret key file {path} holds no key")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError as exc:
            raise ConfigError(
                f"the secret key file {path}: key {number} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with `flowdeck admin new-secret-key`)"
            ) from exc
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the secret key file %s can be read by others (mode %o): chmod 600 it", path, mode
        )
    return keys


class Vault:
    """Encrypts with the first key, decrypts with any."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("a vault needs a key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def load(cls, path: Path, *, create: bool = True) -> Vault:
        if create:
            create_key_file(path)
        return cls(read_keys(path))

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretUnreadable() from exc

    def rotate(self, token: str) -> str:
        """The same value, encrypted with the first key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretUnreadable() from exc

    def __repr__(self) -> str:
        return "Vault()"


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")
