"""Accounts: registration, login and logout, tokens, password changes, administration.

Every change is committed together with its audit entry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.accounts import (
    AccountStatus,
    AuditEntry,
    Role,
    Token,
    TokenKind,
    User,
    check_username,
    count_failure,
    next_status,
    retry_after,
)
from flowdeck.domain.privilege import Actor
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
    StoreUnavailable,
    Throttled,
)
from flowdeck.ids import new_id
from flowdeck.security import tokens
from flowdeck.security.passwords import Hasher, check_policy
from flowdeck.store.base import Store, Tx

log = logging.getLogger("flowdeck.accounts")
TOUCH_EVERY = timedelta(seconds=60)  # how stale a token's last_used_at may get
TOKEN_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated request: who, and with which token."""

    user: User
    token: Token

    @property
    def actor(self) -> Actor:
        return Actor(self.user.id, self.user.username, self.user.role)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    secret: str  # shown once, never stored
    token: Token


class Accounts:
    def __init__(self, store: Store, settings: Settings, hasher: Hasher | None = None) -> None:
        self.store = store
        self.settings = settings
        self.hasher = hasher or Hasher(
            settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
        )
        self._tokens: dict[str, tuple[Token, User, datetime]] = {}  # digest -> checked token
        # Called with the ids of the workflows a deleted user owned, to remove their files.
        self.on_workflows_deleted: Callable[[list[str]], None] | None = None

    # -- helpers --------------------------------------------------------------------------
    def _new_user(self, username: str, password: str, role: Role, status: AccountStatus) -> User:
        check_username(username)
        check_policy(password, username)
        now = clock.now()
        return User(new_id("u"), username, role, status, self.hasher.hash(password), now, now)

    @staticmethod
    def _add_user(tx: Tx, user: User) -> None:
        if tx.get_user_by_name(user.username) is not None:
            raise AlreadyExists(f"username {user.username!r} is already taken", field="username")
        tx.add_user(user)

    def _issue(
        self, tx: Tx, user: User, kind: TokenKind, name: str | None, lifetime: timedelta
    ) -> IssuedToken:
        secret = tokens.new_token()
        now = clock.now()
        token = Token(
            id=new_id("tok"),
            user_id=user.id,
            kind=kind,
            name=name,
            token_hash=tokens.hash_token(secret),
            prefix=tokens.shown_prefix(secret),
            created_at=now,
            expires_at=now + lifetime,
        )
        tx.add_token(token)
        return IssuedToken(secret, token)

    @staticmethod
    def _audit(
        tx: Tx,
        action: str,
        actor: Actor | None,
        target: str | None = None,
        address: str | None = None,
        **details: Any,
    ) -> None:
        tx.add_audit(
            clock.now(),
            action,
            actor_id=actor.user_id if actor else None,
            actor_name=actor.username if actor else None,
            target=target,
            address=address,
            details=details,
        )

    # -- self-service ---------------------------------------------------------------------
    def register(self, username: str, password: str, address: str | None = None) -> User:
        mode = self.settings.registration
        if mode == "closed":
            raise RegistrationClosed()
        status = AccountStatus.ACTIVE if mode == "open" else AccountStatus.PENDING
        user = self._new_user(username, password, Role.USER, status)
        with self._write() as tx:
            self._add_user(tx, user)
            self._audit(tx, "register", None, user.username, address, status=status.value)
        return user

    def login(self, username: str, password: str, address: str | None = None) -> IssuedToken:
        s = self.settings
        keys = [f"user:{username.lower()}"] + ([f"addr:{address}"] if address else [])
        now = clock.now()
        with self.store.read() as tx:
            wait = retry_after(tx.get_throttles(keys), now)
            user = tx.get_user_by_name(username)
        if wait is not None:
            raise Throttled(wait, f"too many failed logins; try again in {wait} s")
        if not self.hasher.verify(user.password_hash if user else None, password):
            with self._write() as tx:
                for key in keys:
                    limit = (
                        s.login_max_failures
                        if key.startswith("user:")
                        else (s.login_max_failures_per_address)
                    )
                    tx.update_throttle(
                        key,
                        lambda cur, key=key, limit=limit: count_failure(  # type: ignore[misc]
                            cur,
                            key,
                            now,
                            window_s=s.login_window_seconds,
                            max_failures=limit,
                            lockout_s=s.login_lockout_seconds,
                        ),
                    )
                self._audit(tx, "login.failed", None, username[:200], address)
            raise InvalidCredentials()
        assert user is not None
        if user.status is not AccountStatus.ACTIVE:
            reason = (
                "account is awaiting approval by an administrator"
                if user.status is AccountStatus.PENDING
                else "account is disabled"
            )
            raise AccountNotActive(reason, status=user.status.value)
        with self._write() as tx:
            tx.update_throttle(keys[0], lambda _cur: None)
            if self.hasher.needs_rehash(user.password_hash):
                user = (
                    tx.update_user(user.id, now, password_hash=self.hasher.hash(password)) or user
                )
            issued = self._issue(
                tx, user, TokenKind.SESSION, None, timedelta(seconds=s.session_ttl_seconds)
            )
            self._audit(tx, "login", Principal(user, issued.token).actor, None, address)
        return issued

    def authenticate(self, secret: str) -> Principal:
        """The principal of a bearer token; :class:`InvalidToken` for anything else."""
        digest = self._digest(secret)
        hit = self._cached(digest)
        if hit is not None:
            found: tuple[Token, User] | None = hit
        else:
            with self.store.read() as tx:
                found = tx.find_token(digest)
        if found is None:
            raise InvalidToken()
        now = clock.now()
        token, user = self._check(found, digest, now)
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            try:
                with self.store.write() as tx:
                    tx.touch_token(token.id, now)
            except StoreUnavailable:  # best effort: a full disk must not fail reads
                log.warning("could not record the use of token %s", token.id)
            token = dataclasses.replace(token, last_used_at=now)
            if hit is not None:  # the next request reads it again (a hit never renews)
                self._tokens.pop(digest, None)
        if hit is None:
            self._remember(digest, token, user)
        return Principal(user, token)

    def cached_principal(self, secret: str) -> Principal | None:
        """:meth:`authenticate` answered from memory (no I/O, for the event loop), or None
        when the store must be asked.  Raises what :meth:`authenticate` raises."""
        digest = self._digest(secret)
        hit = self._cached(digest)
        if hit is None:
            return None
        now = clock.now()
        token, user = self._check(hit, digest, now)
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            return None
        return Principal(user, token)

    @staticmethod
    def _digest(secret: str) -> str:
        if not secret.startswith(tokens.TOKEN_PREFIX) or len(secret) > 200:
            raise InvalidToken()
        return tokens.hash_token(secret)

    @staticmethod
    def _check(found: tuple[Token, User], digest: str, now: datetime) -> tuple[Token, User]:
        token, user = found
        if not tokens.same_hash(token.token_hash, digest) or not token.is_valid(now):
            raise InvalidToken()
        if user.status is not AccountStatus.ACTIVE:
            raise InvalidToken("the account of this token is not active")
        return token, user

    # A checked token is kept for ``token_cache_s``; any change made through this service
    # forgets them all, so revocations here apply at once.
    def _cached(self, digest: str) -> tuple[Token, User] | None:
        hit = self._tokens.get(digest)
        if hit is None or (clock.now() - hit[2]).total_seconds() > self.settings.token_cache_s:
            return None
        return hit[0], hit[1]

    def _remember(self, digest: str, token: Token, user: User) -> None:
        if self.settings.token_cache_s <= 0:
            return
        if len(self._tokens) >= TOKEN_CACHE_SIZE:
            self._tokens.clear()
        self._tokens[digest] = (token, user, clock.now())

    def forget_tokens(self) -> None:
        """Forget every checked token (accounts or tokens changed through another server)."""
        self._tokens.clear()

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        """A write transaction that changes accounts or tokens: the token cache is
        forgotten once it ends (committed or not)."""
        try:
            with self.store.write() as tx:
                yield tx
                tx.announce("accounts")  # other servers of the database forget theirs too
        finally:
            self._tokens.clear()

    def logout(self, principal: Principal, address: str | None = None) -> None:
        with self._write() as tx:
            tx.revoke_token(principal.token.id, clock.now())
            self._audit(tx, "logout", principal.actor, principal.token.id, address)

    def change_password(
        self,
        principal: Principal,
        current: str,
        new: str,
        *,
        end_other_sessions: bool = True,
        address: str | None = None,
    ) -> int:
        """Change the caller's password; return how many other tokens were revoked: by
        default every other session and API token of the account ends (whoever knew the
        old password may hold one); the calling session goes on."""
        user = principal.user
        if not self.hasher.verify(user.password_hash, current):
            raise InvalidInput("the current password is wrong", field="current_password")
        check_policy(new, user.username)
        new_hash = self.hasher.hash(new)
        with self._write() as tx:
            tx.update_user(user.id, clock.now(), password_hash=new_hash)
            ended = 0
            if end_other_sessions:
                ended = tx.revoke_user_tokens(
                    user.id, clock.now(), keep_token_id=principal.token.id
                )
            self._audit(tx, "password.change", principal.actor, user.username, address, ended=ended)
        return ended

    # -- named API tokens -----------------------------------------------------------------
    def create_api_token(
        self, principal: Principal, name: str, expires_in_days: int, address: str | None = None
    ) -> IssuedToken:
        limit = self.settings.api_token_max_days
        if not 1 <= expires_in_days <= limit:
            raise InvalidInput(
                f"expires_in_days must be between 1 and {limit}", field="expires_in_days"
            )
        with self._write() as tx:
            if any(t.name == name for t in tx.list_tokens(principal.user.id)):
                raise AlreadyExists(f"you already have a token named {name!r}", field="name")
            issued = self._issue(
                tx, principal.user, TokenKind.API, name, timedelta(days=expires_in_days)
            )
            self._audit(tx, "token.create", principal.actor, issued.token.id, address, name=name)
        return issued

    def list_tokens(self, principal: Principal) -> list[Token]:
        with self.store.read() as tx:
            return tx.list_tokens(principal.user.id)

    def revoke_token(self, principal: Principal, token_id: str, address: str | None = None) -> None:
        with self._write() as tx:
            token = tx.get_token(token_id)
            if token is None or (
                token.user_id != principal.user.id and not principal.user.is_admin
            ):
                raise NotFound(f"no token {token_id!r}")
            if not tx.revoke_token(token_id, clock.now()):
                raise Conflict(f"token {token_id!r} is already revoked")
            self._audit(tx, "token.revoke", principal.actor, token_id, address)

    # -- administration -------------------------------------------------------------------
    @staticmethod
    def _require_admin(actor: Actor | None) -> None:
        if actor is not None and not actor.is_admin:
            raise PermissionDenied("this needs the admin role")

    @staticmethod
    def _target(tx: Tx, username: str) -> User:
        user = tx.get_user_by_name(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    @staticmethod
    def _keep_an_admin(tx: Tx, user: User, action: str) -> None:
        if user.is_admin and user.is_active and tx.count_admins() <= 1:
            raise Conflict(f"cannot {action} {user.username!r}: it is the last active admin")

    def create_user(
        self,
        username: str,
        password: str,
        *,
        admin: bool = False,
        actor: Actor | None = None,
        address: str | None = None,
    ) -> User:
        """An active account made by an admin (``actor``) or from the command line (None)."""
        self._require_admin(actor)
        role = Role.ADMIN if admin else Role.USER
        user = self._new_user(username, password, role, AccountStatus.ACTIVE)
        with self._write() as tx:
            self._add_user(tx, user)
            self._audit(tx, "admin.create_user", actor, username, address, role=role.value)
        return user

    def bootstrap_admin(self) -> User | None:
        """On a start with no admin: create the one named by ``FLOWDECK_ADMIN_USERNAME``."""
        s = self.settings
        if s.admin_username is None:
            return None
        with self.store.read() as tx:
            if tx.count_admins() > 0:
                return None
            existing = tx.get_user_by_name(s.admin_username)
        if existing is not None:
            raise ConfigError(
                f"invalid setting admin_username (FLOWDECK_ADMIN_USERNAME): user "
                f"{s.admin_username!r} exists and is not an active admin; use "
                "'flowdeck admin promote'"
            )
        password = s.first_admin_password()
        if password is None:
            raise ConfigError(
                "FLOWDECK_ADMIN_USERNAME needs FLOWDECK_ADMIN_PASSWORD or "
                "FLOWDECK_ADMIN_PASSWORD_FILE"
            )
        try:
            return self.create_user(s.admin_username, password, admin=True)
        except InvalidInput as exc:
            raise ConfigError(f"invalid setting admin_password: {exc.message}") from exc

    def list_users(self, actor: Actor | None) -> list[User]:
        self._require_admin(actor)
        with self.store.read() as tx:
            return tx.list_users()

    def set_status(
        self, actor: Actor | None, username: str, action: str, address: str | None = None
    ) -> User:
        """approve, enable or disable an account; disabling ends its sessions at once."""
        self._require_admin(actor)
        with self._write() as tx:
            user = self._target(tx, username)
            status = next_status(action, user.status)
            if status is AccountStatus.DISABLED:
                self._keep_an_admin(tx, user, action)
                tx.revoke_user_tokens(user.id, clock.now())
            updated = tx.update_user(user.id, clock.now(), status=status)
            self._audit(tx, f"admin.{action}", actor, username, address)
        assert updated is not None
        return updated

    def set_role(
        self, actor: Actor | None, username: str, role: Role, address: str | None = None
    ) -> User:
        self._require_admin(actor)
        action = "promote" if role is Role.ADMIN else "demote"
        with self._write() as tx:
            user = self._target(tx, username)
            if user.role is role:
                raise Conflict(f"{username!r} already has the {role.value} role")
            if role is Role.USER:
                self._keep_an_admin(tx, user, action)
            updated = tx.update_user(user.id, clock.now(), role=role)
            self._audit(tx, f"admin.{action}", actor, username, address)
        assert updated is not None
        return updated

    def reset_password(
        self, actor: Actor | None, username: str, password: str, address: str | None = None
    ) -> User:
        """Set a new password and end every session of the account."""
        self._require_admin(actor)
        with self.store.read() as tx:
            self._target(tx, username)
        check_policy(password, username)
        new_hash = self.hasher.hash(password)
        with self._write() as tx:
            user = self._target(tx, username)
            updated = tx.update_user(user.id, clock.now(), password_hash=new_hash)
            tx.revoke_user_tokens(user.id, clock.now())
            self._audit(tx, "admin.reset_password", actor, username, address)
        assert updated is not None
        return updated

    def delete_user(self, actor: Actor | None, username: str, address: str | None = None) -> None:
        """Delete an account without active runs; its tokens, shares, workflows and finished
        runs go with it, its audit entries stay."""
        self._require_admin(actor)
        with self._write() as tx:
            user = self._target(tx, username)
            if actor is not None and actor.user_id == user.id:
                raise Conflict("you cannot delete your own account")
            self._keep_an_admin(tx, user, "delete")
            active = tx.count_active_runs(owner_id=user.id)
            if active:
                raise Conflict(
                    f"{username!r} has {active} active run(s): stop them first",
                    active_runs=active,
                )
            owned = [w.id for w in tx.list_workflows(None, owner_id=user.id, limit=10**9)]
            tx.delete_user(user.id)
            self._audit(tx, "admin.delete_user", actor, username, address)
        if owned and self.on_workflows_deleted is not None:
            self.on_workflows_deleted(owned)

    def audit(
        self,
        actor: Actor | None,
        *,
        limit: int = 100,
        before_id: int | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        self._require_admin(actor)
        with self.store.read() as tx:
            return tx.list_audit(limit=limit, before_id=before_id, action=action)


def expires_in(token: Token, now: datetime | None = None) -> int:
    return int((token.expires_at - (now or clock.now())).total_seconds())
