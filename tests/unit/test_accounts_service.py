"""The accounts service on the in-memory store, with a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowdeck import clock
from flowdeck.config import load_settings
from flowdeck.domain.accounts import AccountStatus, Role
from flowdeck.errors import (
    AccountNotActive,
    AlreadyExists,
    ConfigError,
    Conflict,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    NotFound,
    PermissionDenied,
    RegistrationClosed,
    Throttled,
)
from flowdeck.security.passwords import Hasher
from flowdeck.services.accounts import Accounts
from flowdeck.store.fake import FakeStore

PW = "correct horse battery staple"
HASHER = Hasher(2, 19456, 1)


@pytest.fixture
def frozen() -> Iterator[clock.FrozenClock]:
    fc = clock.FrozenClock()
    with clock.use(fc):
        yield fc


def make(**settings: object) -> Accounts:
    opts = {"registration": "open", "login_max_failures": 3, "login_lockout_seconds": 60}
    opts.update(settings)
    return Accounts(FakeStore(), load_settings(None, **opts), HASHER)


def test_throttle_locks_even_the_right_password_then_expires(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            acc.login("alice", "wrong password here", "10.0.0.1")
    with pytest.raises(Throttled) as caught:
        acc.login("alice", PW, "10.0.0.2")  # other address, same account
    assert caught.value.retry_after_s == 60
    frozen.advance(61)
    assert acc.login("alice", PW, "10.0.0.2").secret.startswith("fdk_")


def test_throttle_per_address_across_accounts(frozen: clock.FrozenClock) -> None:
    acc = make(login_max_failures=100, login_max_failures_per_address=4)
    acc.register("alice", PW)
    for i in range(4):
        with pytest.raises(InvalidCredentials):
            acc.login(f"nobody{i}", PW, "10.9.9.9")
    with pytest.raises(Throttled):
        acc.login("alice", PW, "10.9.9.9")
    assert acc.login("alice", PW, "10.0.0.1")  # another address is not affected


def test_unknown_user_and_wrong_password_answer_alike(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    with pytest.raises(InvalidCredentials) as a:
        acc.login("alice", "not the password!", None)
    with pytest.raises(InvalidCredentials) as b:
        acc.login("mallory", "not the password!", None)
    assert (a.value.code, a.value.message) == (b.value.code, b.value.message)
    failed = acc.audit(None, action="login.failed")
    assert [e.target for e in failed] == ["mallory", "alice"]


def test_an_unknown_user_costs_a_full_password_verification(frozen: clock.FrozenClock) -> None:
    calls: list[str | None] = []

    class Counting(Hasher):
        def verify(self, stored_hash: str | None, password: str) -> bool:
            calls.append(stored_hash)
            return super().verify(stored_hash, password)

    acc = Accounts(FakeStore(), make().settings, Counting(2, 19456, 1))
    with pytest.raises(InvalidCredentials):
        acc.login("nobody-here", PW)
    assert calls == [None]  # verified against the dummy hash, as long as a real one


def test_session_tokens_expire(frozen: clock.FrozenClock) -> None:
    acc = make(session_ttl_seconds=120)
    acc.register("alice", PW)
    secret = acc.login("alice", PW).secret
    assert acc.authenticate(secret).user.username == "alice"
    frozen.advance(121)
    with pytest.raises(InvalidToken):
        acc.authenticate(secret)


def test_approval_mode(frozen: clock.FrozenClock) -> None:
    acc = make(registration="approval")
    user = acc.register("alice", PW)
    assert user.status is AccountStatus.PENDING
    with pytest.raises(AccountNotActive, match="awaiting approval"):
        acc.login("alice", PW)
    acc.set_status(None, "alice", "approve")
    assert acc.login("alice", PW)


def test_closed_registration() -> None:
    with pytest.raises(RegistrationClosed):
        make(registration="closed").register("alice", PW)


def test_disable_ends_sessions_and_enable_needs_new_login(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    secret = acc.login("alice", PW).secret
    acc.set_status(None, "alice", "disable")
    with pytest.raises(InvalidToken):
        acc.authenticate(secret)
    with pytest.raises(AccountNotActive, match="disabled"):
        acc.login("alice", PW)
    acc.set_status(None, "alice", "enable")
    with pytest.raises(InvalidToken):
        acc.authenticate(secret)  # revoked, not just suspended


def test_the_last_admin_cannot_be_removed(frozen: clock.FrozenClock) -> None:
    acc = make()
    root = acc.create_user("root", PW, admin=True)
    for action in ("demote", "disable", "delete"):
        with pytest.raises(Conflict, match="last active admin"):
            if action == "demote":
                acc.set_role(None, "root", Role.USER)
            elif action == "disable":
                acc.set_status(None, "root", "disable")
            else:
                acc.delete_user(None, "root")
    acc.create_user("second", PW, admin=True)
    acc.set_role(None, "root", Role.USER)
    roles = {u.username: u.role for u in acc.list_users(None)}
    assert roles == {root.username: Role.USER, "second": Role.ADMIN}


def test_non_admin_actor_is_refused(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    actor = acc.authenticate(acc.login("alice", PW).secret).actor
    with pytest.raises(PermissionDenied):
        acc.list_users(actor)


def test_rehash_on_login_when_parameters_changed(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    stronger = Accounts(acc.store, acc.settings, Hasher(3, 19456, 1))
    stronger.login("alice", PW)
    with acc.store.read() as tx:
        stored = tx.get_user_by_name("alice")
    assert stored is not None and "t=3" in stored.password_hash


def test_api_tokens(frozen: clock.FrozenClock) -> None:
    acc = make()
    acc.register("alice", PW)
    acc.register("bobby", PW)
    alice = acc.authenticate(acc.login("alice", PW).secret)
    bob = acc.authenticate(acc.login("bobby", PW).secret)
    issued = acc.create_api_token(alice, "ci", 30)
    assert acc.authenticate(issued.secret).token.name == "ci"
    with pytest.raises(AlreadyExists):
        acc.create_api_token(alice, "ci", 30)
    with pytest.raises(InvalidInput, match="between 1 and 365"):
        acc.create_api_token(alice, "long", 366)
    with pytest.raises(NotFound):
        acc.revoke_token(bob, issued.token.id)  # another user's token does not exist for bob
    acc.revoke_token(alice, issued.token.id)
    with pytest.raises(InvalidToken):
        acc.authenticate(issued.secret)
    monthly = acc.create_api_token(alice, "monthly", 30)
    frozen.advance(30 * 86400 - 1)
    assert acc.authenticate(monthly.secret).user.username == "alice"
    frozen.advance(2)
    with pytest.raises(InvalidToken):
        acc.authenticate(monthly.secret)


def test_bootstrap_admin_from_settings(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PW + "\n")
    acc = make(admin_username="root", admin_password_file=str(pw))
    admin = acc.bootstrap_admin()
    assert admin is not None and admin.is_admin
    assert acc.bootstrap_admin() is None  # an admin exists: nothing to do
    weak = make(admin_username="root", admin_password="short")
    with pytest.raises(ConfigError, match="password too short"):
        weak.bootstrap_admin()
    guessable = make(admin_username="root", admin_password="qwertyuiopasdf")
    with pytest.raises(ConfigError, match="admin_password: password too easy to guess"):
        guessable.bootstrap_admin()
    with pytest.raises(ConfigError, match="FLOWDECK_ADMIN_PASSWORD"):
        make(admin_username="root").bootstrap_admin()


def test_a_checked_token_is_answered_from_memory_until_a_change(
    frozen: clock.FrozenClock,
) -> None:
    acc = make()
    acc.register("alice", PW)
    secret = acc.login("alice", PW).secret
    assert acc.cached_principal(secret) is None  # not checked yet: the store must be asked
    assert acc.authenticate(secret).user.username == "alice"
    cached = acc.cached_principal(secret)
    assert cached is not None and cached.user.username == "alice"
    acc.logout(cached)  # a change through this service applies at once
    assert acc.cached_principal(secret) is None
    with pytest.raises(InvalidToken):
        acc.authenticate(secret)


def test_a_change_made_elsewhere_applies_within_token_cache_s(
    frozen: clock.FrozenClock,
) -> None:
    acc = make(token_cache_s=2)
    acc.register("alice", PW)
    secret = acc.login("alice", PW).secret
    token = acc.authenticate(secret).token
    with acc.store.write() as tx:  # another server, or the CLI, revokes it
        tx.revoke_token(token.id, clock.now())
    assert acc.authenticate(secret).token.id == token.id  # still trusted for a moment
    frozen.advance(1.5)
    assert acc.authenticate(secret).token.id == token.id  # a hit does not renew the trust
    frozen.advance(1)
    with pytest.raises(InvalidToken):
        acc.authenticate(secret)


def test_a_cached_token_still_expires_and_a_zero_ttl_never_caches(
    frozen: clock.FrozenClock,
) -> None:
    acc = make(session_ttl_seconds=120, token_cache_s=60)
    acc.register("alice", PW)
    secret = acc.login("alice", PW).secret
    frozen.advance(100)
    acc.authenticate(secret)  # checked (and its use recorded) at 100 s
    frozen.advance(19)
    assert acc.cached_principal(secret) is not None
    frozen.advance(2)  # 121 s: expired, though checked 21 s ago
    with pytest.raises(InvalidToken):
        acc.cached_principal(secret)
    uncached = make(token_cache_s=0)
    uncached.register("bob", PW)
    other = uncached.login("bob", PW).secret
    uncached.authenticate(other)
    assert uncached.cached_principal(other) is None
