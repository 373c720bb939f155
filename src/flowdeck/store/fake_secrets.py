"""The in-memory store's secrets (same contract as :mod:`sql_secrets`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from flowdeck.domain.secrets import Secret
from flowdeck.errors import NotFound
from flowdeck.store.base import REFERENCE_GONE

if TYPE_CHECKING:
    from flowdeck.store.fake import _State


class FakeSecretsMixin:
    s: _State

    def put_secret(self, secret: Secret) -> bool:
        if secret.owner_id not in self.s.users:
            raise NotFound(REFERENCE_GONE)
        key = (secret.owner_id, secret.name)
        old = self.s.secrets.get(key)
        if old is not None:
            self.s.secrets[key] = dataclasses.replace(
                old, ciphertext=secret.ciphertext, updated_at=secret.updated_at
            )
            return False
        self.s.secrets[key] = secret
        return True

    def get_secret(self, owner_id: str, name: str) -> Secret | None:
        return self.s.secrets.get((owner_id, name))

    def get_secrets(self, owner_id: str, names: list[str]) -> list[Secret]:
        return [
            self.s.secrets[(owner_id, n)]
            for n in sorted(set(names))
            if (owner_id, n) in self.s.secrets
        ]

    def list_secrets(self, owner_id: str | None) -> list[Secret]:
        return [
            v for k, v in sorted(self.s.secrets.items()) if owner_id is None or k[0] == owner_id
        ]

    def delete_secret(self, owner_id: str, name: str) -> bool:
        return self.s.secrets.pop((owner_id, name), None) is not None
