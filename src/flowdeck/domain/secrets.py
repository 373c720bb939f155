"""Per-user secrets as plain values: names, their rules, and what the store keeps (the
value encrypted; see :mod:`flowdeck.security.vault`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
NAME_RE = re.compile(NAME_PATTERN)
MAX_VALUE_BYTES = 64 * 1024  # of a value, UTF-8 encoded
MASK = "***"


@dataclass(frozen=True, slots=True)
class Secret:
    owner_id: str
    name: str
    ciphertext: str  # Fernet token (urlsafe base64); never the value itself
    created_at: datetime
    updated_at: datetime

    def __repr__(self) -> str:  # the ciphertext has no business in a log line either
        return f"Secret(owner_id={self.owner_id!r}, name={self.name!r})"


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


def mask(text: str, values: list[str] | tuple[str, ...]) -> str:
    """``text`` with every exact occurrence of each value replaced by :data:`MASK`, longest
    values first (one value may contain another)."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def mask_bytes(data: bytes, values: list[str] | tuple[str, ...]) -> bytes:
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        data = data.replace(value.encode(), MASK.encode())
    return data
