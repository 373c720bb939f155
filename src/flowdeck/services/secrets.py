"""Per-user secrets: write-only values, encrypted at rest.

A user sets, lists (names and dates) and deletes their own; an admin may list and delete
anyone's, never read a value.  Values leave this module only decrypted for a step of
their owner's run (:meth:`Secrets.resolve`), and never reach a response, a log line, an
event or an audit entry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.privilege import Actor
from flowdeck.domain.secrets import MAX_VALUE_BYTES, NAME_PATTERN, Secret, valid_name
from flowdeck.errors import InvalidInput, NotFound
from flowdeck.security.vault import Vault
from flowdeck.store.base import Store, Tx

log = logging.getLogger("flowdeck.secrets")
MAX_SECRETS = 1000  # per user


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What anyone may see of a secret: never its value."""

    name: str
    owner: str  # username
    created_at: datetime
    updated_at: datetime


def check_name(name: str) -> None:
    if not valid_name(name):
        raise InvalidInput(
            f"invalid secret name {name[:140]!r}: letters, digits and _, not starting with "
            "a digit, at most 128 characters",
            field="name",
            pattern=NAME_PATTERN,
        )


def check_value(value: str) -> None:
    size = len(value.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise InvalidInput(
            f"a secret's value is at most {MAX_VALUE_BYTES} bytes in UTF-8 (this one: {size})",
            field="value",
            limit=MAX_VALUE_BYTES,
        )
    if not value:
        raise InvalidInput("a secret's value cannot be empty", field="value")


class Secrets:
    def __init__(self, store: Store, settings: Settings, vault: Vault | None = None) -> None:
        self.store = store
        self.settings = settings
        self._vault = vault

    @property
    def vault(self) -> Vault:
        if self._vault is None:  # loaded (and the key file created) when first needed
            self._vault = Vault.load(self.settings.resolved_secret_key_file)
        return self._vault

    # -- the owner, or an admin -----------------------------------------------------------
    def _owner(self, tx: Tx, actor: Actor, owner: str | None) -> tuple[str, str]:
        """(user id, username) whose secrets ``actor`` acts on: theirs, or with ``owner``
        (an admin only) another user's."""
        if owner is None or owner.lower() == actor.username.lower():
            return actor.user_id, actor.username
        user = tx.get_user_by_name(owner) if actor.is_admin else None
        if user is None:
            raise NotFound(f"no user {owner}")
        return user.id, user.username

    def set(self, actor: Actor, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Create or replace the actor's own secret; True when created."""
        check_name(name)
        check_value(value)
        ciphertext = self.vault.encrypt(value)
        now = clock.now()
        with self.store.write() as tx:
            if (
                tx.get_secret(actor.user_id, name) is None
                and len(tx.list_secrets(actor.user_id)) >= MAX_SECRETS
            ):
                raise InvalidInput(f"a user has at most {MAX_SECRETS} secrets")
            created = tx.put_secret(Secret(actor.user_id, name, ciphertext, now, now))
            stored = tx.get_secret(actor.user_id, name)
            tx.add_audit(
                now,
                "secret.create" if created else "secret.replace",
                actor_id=actor.user_id,
                actor_name=actor.username,
                target=f"{actor.username}/{name}",
            )
        assert stored is not None
        return SecretInfo(name, actor.username, stored.created_at, stored.updated_at), created

    def list(self, actor: Actor, owner: str | None = None) -> list[SecretInfo]:
        with self.store.read() as tx:
            user_id, username = self._owner(tx, actor, owner)
            found = tx.list_secrets(user_id)
        return [SecretInfo(s.name, username, s.created_at, s.updated_at) for s in found]

    def get(self, actor: Actor, name: str, owner: str | None = None) -> SecretInfo:
        check_name(name)
        with self.store.read() as tx:
            user_id, username = self._owner(tx, actor, owner)
            found = tx.get_secret(user_id, name)
        if found is None:
            raise NotFound(f"no secret {name}")
        return SecretInfo(found.name, username, found.created_at, found.updated_at)

    def delete(self, actor: Actor, name: str, owner: str | None = None) -> None:
        check_name(name)
        with self.store.write() as tx:
            user_id, username = self._owner(tx, actor, owner)
            if not tx.delete_secret(user_id, name):
                raise NotFound(f"no secret {name}")
            tx.add_audit(
                clock.now(),
                "secret.delete",
                actor_id=actor.user_id,
                actor_name=actor.username,
                target=f"{username}/{name}",
            )

    # -- for the runtime and the operator -------------------------------------------------
    def rotate(self) -> int:
        """Re-encrypt every stored value — users' secrets and webhook signing secrets —
        with the key file's first key; the count."""
        with self.store.write() as tx:
            hooks = tx.seal_subscriptions(again=True)
            found = tx.list_secrets(None)
            for s in found:
                tx.put_secret(
                    Secret(
                        s.owner_id,
                        s.name,
                        self.vault.rotate(s.ciphertext),
                        s.created_at,
                        s.updated_at,
                    )
                )
        return len(found) + hooks
