"""Bearer tokens: 256 random bits, stored only as a SHA-256 hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "fdk_"  # noqa: S105 - a marker, not a secret
PREFIX_SHOWN = 8  # characters of the secret kept to recognise a token in a list


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # A fast hash is right here: the token has 256 bits of entropy, unlike a password.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def shown_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + PREFIX_SHOWN]
