"""Password policy (NIST SP 800-63B style) and Argon2id hashing."""

from __future__ import annotations

import re
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from flowdeck.errors import PasswordRejected

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_SCORE = 3  # zxcvbn's scale: 0 (too guessable) to 4 (very unguessable)
# zxcvbn's own limit: its matching grows fast with the length; a longer password is judged
# by its first ZXCVBN_LENGTH characters.
ZXCVBN_LENGTH = 72
_WORDS = re.compile(r"[^\W_]{3,}")


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most common passwords from real leaks.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def check_policy(password: str, username: str, *context: str) -> None:
    """Raise :class:`PasswordRejected` naming the first rule ``password`` breaks.

    Rules: 12 to 128 characters; not a common password; does not contain the username;
    a zxcvbn score of at least :data:`MIN_SCORE`, with the username and ``context`` (such as
    an email address) counted as easy to guess.  No composition rules.
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
    _check_strength(password, [username, *context])


def _check_strength(password: str, context: list[str]) -> None:
    from zxcvbn import zxcvbn

    inputs = [c for c in context if c]
    inputs += [w for c in inputs for w in _WORDS.findall(c)]  # an email's words, too
    result = zxcvbn(password[:ZXCVBN_LENGTH], user_inputs=inputs, max_length=ZXCVBN_LENGTH)
    score = int(result["score"])
    if score >= MIN_SCORE:
        return
    feedback = result.get("feedback") or {}
    warning = str(feedback.get("warning") or "")
    suggestions = [str(s) for s in feedback.get("suggestions") or []]
    why = " ".join([warning, *suggestions]).strip() or "Add another word or two."
    raise PasswordRejected(
        f"password too easy to guess (strength {score} of 4, at least {MIN_SCORE} needed): {why}",
        rule="too_guessable",
        score=score,
        min_score=MIN_SCORE,
        warning=warning,
        suggestions=suggestions,
    )


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
