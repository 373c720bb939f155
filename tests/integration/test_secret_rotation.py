"""The secret key's rotation, as docs/operations.md tells it: a new first line, `flowdeck
admin rotate-secrets`, then the old line goes — and the secrets still decrypt."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet
from typer.testing import CliRunner

from flowdeck.cli.main import app
from flowdeck.domain.privilege import Actor
from flowdeck.security.vault import Vault
from flowdeck.services.context import build_context
from tests.helpers import STRONG, make_settings

runner = CliRunner()


def stored(data_dir: Path) -> list[str]:
    ctx = build_context(make_settings(data_dir))
    try:
        with ctx.store.read() as tx:
            return [s.ciphertext for s in tx.list_secrets(None)]
    finally:
        ctx.close()


def test_rotation_re_encrypts_with_the_new_first_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    ctx = build_context(settings)
    user = ctx.accounts.create_user("keeper", STRONG)
    actor = Actor(user.id, user.username, user.role)
    ctx.secrets.set(actor, "one", "value-one")
    ctx.secrets.set(actor, "two", "value-two")
    ctx.close()
    key_file = settings.resolved_secret_key_file
    old_key = key_file.read_text().strip()
    before = stored(tmp_path)

    new_key = Fernet.generate_key().decode()
    key_file.write_text(f"{new_key}\n{old_key}\n")
    env = {"FLOWDECK_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    r = runner.invoke(app, ["admin", "rotate-secrets"], env=env)
    assert r.exit_code == 0, r.output
    assert "re-encrypted 2 secret(s)" in r.output
    key_file.write_text(f"{new_key}\n")  # the old line goes

    after = stored(tmp_path)
    assert after != before
    only_new = Vault([new_key.encode()])
    assert sorted(only_new.decrypt(c) for c in after) == ["value-one", "value-two"]
    r = runner.invoke(app, ["admin", "new-secret-key"], env=env)
    assert r.exit_code == 0
    assert (
        Vault([r.output.strip().encode()]).decrypt(Vault([r.output.strip().encode()]).encrypt("x"))
        == "x"
    )


def test_webhook_secrets_kept_in_clear_are_sealed_at_start_and_still_sign(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from flowdeck.domain.webhooks import Subscription, new_secret
    from flowdeck.store.sql import SqlStore

    settings = make_settings(tmp_path)
    ctx = build_context(settings)
    user = ctx.accounts.create_user("hooker", STRONG)
    ctx.close()
    # a subscription as an earlier version stored it: its secrets in clear
    legacy = SqlStore(settings.resolved_database_url)
    now = datetime.now(UTC)
    secret, previous = new_secret(), new_secret()
    sub = Subscription(
        "wh_legacy",
        user.id,
        "https://example.org/",
        ["*"],
        None,
        True,
        secret,
        now,
        now,
        previous_secret=previous,
        previous_secret_until=now,
    )
    with legacy.write() as tx:
        tx.add_subscription(sub)
    legacy.close()
    db = Path(settings.resolved_database_url.removeprefix("sqlite:///"))

    ctx = build_context(settings)  # a start seals them
    with ctx.store.read() as tx:
        got = tx.get_subscription("wh_legacy")
    ctx.close()
    assert got is not None and (got.secret, got.previous_secret) == (secret, previous)
    raw = SqlStore(settings.resolved_database_url)
    with raw.engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT secret, previous_secret FROM webhooks WHERE id = 'wh_legacy'"
        ).one()
    raw.close()
    assert row[0].startswith("fernet:") and row[1].startswith("fernet:")
    assert secret not in row[0] + row[1] and previous not in row[0] + row[1]
    for path in db.parent.glob(db.name + "*"):  # the file, its WAL: nothing in clear left
        data = path.read_bytes()
        assert secret.encode() not in data and previous.encode() not in data, path
