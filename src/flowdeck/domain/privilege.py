"""The privilege rule every resource follows.

A user sees and acts on their own objects; an object can be shared read-only with named
users; admins see and act on everything.  Callers turn a refusal into ``NotFound`` (never
"forbidden") so that another user's object does not leak its existence.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from flowdeck.domain.accounts import Role


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking: the authenticated user, as the rule needs it."""

    user_id: str
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def allowed(
    actor: Actor,
    owner_id: str,
    access: Access,
    shared_with: Collection[str] = (),
    public: bool = False,
) -> bool:
    """May ``actor`` read or write an object owned by ``owner_id``?"""
    if actor.is_admin or actor.user_id == owner_id:
        return True
    if access is Access.READ:
        return public or actor.user_id in shared_with
    return False
