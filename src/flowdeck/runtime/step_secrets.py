"""Secrets at a step's start and end: decrypted from the run owner's store when the
attempt starts (as variables or 0600 files in its work folder), removed and masked in its
stored logs when it ends.  Values live in the scheduler's memory for the attempt only."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from flowdeck.domain.secrets import MASK, mask
from flowdeck.domain.spec import StepSpec
from flowdeck.errors import StoreUnavailable
from flowdeck.runtime.steps import StepError
from flowdeck.security.vault import SecretUnreadable, Vault
from flowdeck.store.base import Store

log = logging.getLogger("flowdeck.scheduler")
CHUNK = 1 << 20


class SecretSource:
    """The run owner's secrets, decrypted (the key file is read when first needed)."""

    def __init__(self, store: Store, key_file: Path) -> None:
        self.store = store
        self.key_file = key_file
        self._vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault.load(self.key_file)
        return self._vault

    def values(self, owner_id: str, names: list[str]) -> dict[str, str]:
        """``names``' values from ``owner_id``'s secrets; a StepError names the first
        missing one."""
        with self.store.read() as tx:
            found = {s.name: s for s in tx.get_secrets(owner_id, names)}
        for name in names:
            if name not in found:
                raise StepError(f"secret {name!r} is not set (the run's owner has no such secret)")
        values = {}
        for name, secret in found.items():
            try:
                values[name] = self.vault.decrypt(secret.ciphertext)
            except SecretUnreadable as exc:
                raise StepError(
                    f"secret {name!r} cannot be decrypted with the keys of secret_key_file"
                ) from exc
        return values

    def quiet_values(self, owner_id: str, names: list[str]) -> list[str]:
        """For masking after a restart (the values were not kept): what can be found."""
        try:
            with self.store.read() as tx:
                found = tx.get_secrets(owner_id, names)
            return [self.vault.decrypt(s.ciphertext) for s in found]
        except (StoreUnavailable, SecretUnreadable, OSError) as exc:
            log.warning("cannot read secrets to mask logs: %s", type(exc).__name__)
            return []


def give(
    step: StepSpec, values: dict[str, str], env: dict[str, str], cwd: Path
) -> tuple[list[str], list[Path]]:
    """Put each secret where ``step`` asks; (the values used, the files written)."""
    files: list[Path] = []
    for use in step.secrets:
        value = values[use.name]
        if use.env is not None:
            env[use.env] = value
        else:
            assert use.file is not None
            path = cwd / use.file
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, value.encode("utf-8"))
            finally:
                os.close(fd)
            files.append(path)
    return list(values.values()), files


def remove(files: list[Path]) -> None:
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # e.g. its folder went with a killed run
            log.warning("cannot remove a secret file: %s", exc.strerror)


def mask_file(path: Path, values: list[str]) -> bool:
    """Replace each exact value in ``path`` by ``***``, atomically (a copy replaces it);
    True when something was replaced."""
    encoded = sorted({v.encode("utf-8") for v in values if v}, key=len, reverse=True)
    if not encoded or not path.is_file():
        return False
    pattern = re.compile(b"|".join(re.escape(v) for v in encoded))
    keep = len(encoded[0]) - 1  # a value cut by a chunk's end is found with the next chunk
    tmp = path.with_name(f".{path.name}.mask")
    found = False
    with path.open("rb") as src, tmp.open("wb") as out:
        carry = b""
        while True:
            chunk = src.read(CHUNK)
            buf = carry + chunk
            if not chunk:
                masked, n = pattern.subn(MASK.encode(), buf)
                found = found or n > 0
                out.write(masked)
                break
            limit = len(buf) - keep
            pos = 0
            for m in pattern.finditer(buf):
                if m.start() >= limit:
                    break
                out.write(buf[pos : m.start()])
                out.write(MASK.encode())
                pos = m.end()
                found = True
            cut = max(pos, limit)
            out.write(buf[pos:cut])
            carry = buf[cut:]
        if found:
            out.flush()
            os.fsync(out.fileno())
    if found:
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    else:
        tmp.unlink()
    return found


def mask_text(text: str, values: list[str]) -> str:
    return mask(text, values)
