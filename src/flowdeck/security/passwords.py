"""Password policy (NIST SP 800-63B style) and Argon2id hashing."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from flowdeck.errors import PasswordRejected

MIN_LENGTH = 12
MAX_LENGTH = 128


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most common passwords from real leaks.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def check_policy(password: str, username: str) -> None:
    """Raise :class:`PasswordRejected` naming the first rule ``password`` breaks.

    Rules: 12 to 128 characters; not a common password; does not contain the username.
    No composition rules.
    """
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(
            f"password too short: at least {MIN_LENGTH} characters", rule="min_length"
        )
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(
            f"password too long: at most {MAX_LENGTH} characters", rule="max_length"
        )
    if password.lower() in _common_passwords():
        raise PasswordRejected(
            "password is in a list of commonly used passwords", rule="common_password"
        )
    if username and username.lower() in password.lower():
        raise PasswordRejected("password must not contain the username", rule="contains_username")


class Hasher:
    """Argon2id hashing with the configured cost; knows when a stored hash is outdated."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._ph = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        # Verified against when the user does not exist, so that an unknown user and a
        # wrong password take the same time.
        self._dummy = self._ph.hash("flowdeck-timing-equaliser")

    def hash(self, password: str) -> str:
        return self._ph.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant-work check; ``stored_hash=None`` burns the same time and fails."""
        try:
            return self._ph.verify(stored_hash or self._dummy, password) and (
                stored_hash is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._ph.check_needs_rehash(stored_hash)
