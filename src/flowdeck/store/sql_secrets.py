"""The SQL store's secrets: one row per (owner, name), the value encrypted."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowdeck.domain.secrets import Secret
from flowdeck.store import schema as t

_S = t.secrets


def _secret(row: Any) -> Secret:
    m = row._mapping
    return Secret(m["owner_id"], m["name"], m["ciphertext"], m["created_at"], m["updated_at"])


class SqlSecretsMixin:
    conn: Connection
    dialect: str

    def put_secret(self, secret: Secret) -> bool:
        key = sa.and_(_S.c.owner_id == secret.owner_id, _S.c.name == secret.name)
        # the row is locked (PostgreSQL) or the database is (SQLite) for the rest of the
        # transaction: two writers of one name do not both insert
        q = sa.select(_S.c.name).where(key)
        if self.dialect == "postgresql":
            q = q.with_for_update()
        if self.conn.execute(q).first() is not None:
            self.conn.execute(
                _S.update()
                .where(key)
                .values(ciphertext=secret.ciphertext, updated_at=secret.updated_at)
            )
            return False
        self.conn.execute(
            _S.insert().values(
                owner_id=secret.owner_id,
                name=secret.name,
                ciphertext=secret.ciphertext,
                created_at=secret.created_at,
                updated_at=secret.updated_at,
            )
        )
        return True

    def get_secret(self, owner_id: str, name: str) -> Secret | None:
        q = _S.select().where(_S.c.owner_id == owner_id, _S.c.name == name)
        row = self.conn.execute(q).first()
        return _secret(row) if row else None

    def get_secrets(self, owner_id: str, names: list[str]) -> list[Secret]:
        if not names:
            return []
        q = _S.select().where(_S.c.owner_id == owner_id, _S.c.name.in_(names))
        return [_secret(row) for row in self.conn.execute(q.order_by(_S.c.name))]

    def list_secrets(self, owner_id: str | None) -> list[Secret]:
        q = _S.select().order_by(_S.c.owner_id, _S.c.name)
        if owner_id is not None:
            q = q.where(_S.c.owner_id == owner_id)
        return [_secret(row) for row in self.conn.execute(q)]

    def delete_secret(self, owner_id: str, name: str) -> bool:
        q = _S.delete().where(_S.c.owner_id == owner_id, _S.c.name == name)
        return self.conn.execute(q).rowcount > 0
