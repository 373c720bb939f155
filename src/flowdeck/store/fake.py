"""An in-memory store with the same contract as the SQL store, for fast unit tests of the
services and, later, the scheduler.  Transactions are serialised by one lock and roll back
by restoring a copy of the state taken at their start."""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowdeck.domain.accounts import AccountStatus, AuditEntry, Role, Throttle, Token, User
from flowdeck.domain.composition import CacheEntry, RunLink
from flowdeck.domain.graphs import Graph, GraphNode
from flowdeck.domain.leases import ServerInstance
from flowdeck.domain.ports import StreamPort, StreamRecord
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import Event, Product, Run, StagedFile, StepRecord
from flowdeck.domain.secrets import Secret
from flowdeck.domain.webhooks import Attempt, Delivery, Subscription
from flowdeck.domain.workflows import WORKFLOW_KIND, Visibility, Workflow
from flowdeck.errors import AlreadyExists
from flowdeck.store.base import EventHook, Store, Tx
from flowdeck.store.fake_graphs import FakeGraphsMixin
from flowdeck.store.fake_leases import FakeLeasesMixin
from flowdeck.store.fake_ports import FakePortsMixin
from flowdeck.store.fake_retention import FakeRetentionMixin
from flowdeck.store.fake_runs import FakeRunsMixin
from flowdeck.store.fake_secrets import FakeSecretsMixin
from flowdeck.store.fake_stats import FakeStatsMixin
from flowdeck.store.fake_webhooks import FakeWebhooksMixin
from flowdeck.store.fake_wes import FakeWesMixin


@dataclass
class _State:
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    throttles: dict[str, Throttle] = field(default_factory=dict)
    shares: set[tuple[str, str, str]] = field(default_factory=set)
    audit: list[AuditEntry] = field(default_factory=list)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    steps: dict[tuple[str, str, int], StepRecord] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    staged: dict[tuple[str, str, str], StagedFile] = field(default_factory=dict)
    webhooks: dict[str, Subscription] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    attempts: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    instances: dict[str, ServerInstance] = field(default_factory=dict)
    commit_marks: dict[str, int] = field(default_factory=dict)
    ports: dict[tuple[str, str, str], StreamPort] = field(default_factory=dict)
    records: dict[tuple[str, str, str], list[StreamRecord]] = field(default_factory=dict)
    graphs: dict[str, Graph] = field(default_factory=dict)
    graph_nodes: dict[tuple[str, str], GraphNode] = field(default_factory=dict)
    run_links: dict[str, RunLink] = field(default_factory=dict)
    cache: dict[tuple[str, str, int], CacheEntry] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)
    quotas: dict[str, Quota] = field(default_factory=dict)
    usage: dict[str, tuple[float, datetime]] = field(default_factory=dict)


class FakeStore(Store):
    inline_reads = True  # in memory

    def __init__(self) -> None:
        super().__init__()
        self._state = _State()
        self._lock = threading.RLock()

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            saved = copy.deepcopy(self._state)
            tx = FakeTx(self._state, self.event_hooks)
            try:
                yield tx
            except BaseException:
                self._state.__dict__.update(saved.__dict__)
                raise
            if tx.added:
                self._publish(tx.added)

    def read(self) -> AbstractContextManager[Tx]:
        return self._transaction()

    def write(self) -> AbstractContextManager[Tx]:
        return self._transaction()

    def ping(self) -> None:
        return None


class FakeTx(
    FakeRunsMixin,
    FakeWebhooksMixin,
    FakeSecretsMixin,
    FakeLeasesMixin,
    FakePortsMixin,
    FakeGraphsMixin,
    FakeWesMixin,
    FakeStatsMixin,
    FakeRetentionMixin,
    Tx,
):
    def __init__(self, state: _State, event_hooks: list[EventHook] | None = None) -> None:
        self.s = state
        self.added = []
        self.event_hooks = event_hooks if event_hooks is not None else []

    # -- users ----------------------------------------------------------------------------
    def add_user(self, user: User) -> None:
        if user.id in self.s.users or self.get_user_by_name(user.username) is not None:
            raise AlreadyExists("an object with the same unique name already exists")
        self.s.users[user.id] = user

    def get_user(self, user_id: str) -> User | None:
        return self.s.users.get(user_id)

    def get_user_by_name(self, username: str) -> User | None:
        key = username.lower()
        return next((u for u in self.s.users.values() if u.username.lower() == key), None)

    def list_users(self) -> list[User]:
        return sorted(self.s.users.values(), key=lambda u: u.username.lower())

    def count_admins(self) -> int:
        return sum(1 for u in self.s.users.values() if u.is_admin and u.is_active)

    def update_user(
        self,
        user_id: str,
        now: datetime,
        *,
        role: Role | None = None,
        status: AccountStatus | None = None,
        password_hash: str | None = None,
    ) -> User | None:
        user = self.s.users.get(user_id)
        if user is None:
            return None
        changes: dict[str, Any] = {"updated_at": now}
        if role is not None:
            changes["role"] = role
        if status is not None:
            changes["status"] = status
        if password_hash is not None:
            changes["password_hash"] = password_hash
        self.s.users[user_id] = dataclasses.replace(user, **changes)
        return self.s.users[user_id]

    def delete_user(self, user_id: str) -> bool:
        if self.s.users.pop(user_id, None) is None:
            return False
        self.s.tokens = {k: v for k, v in self.s.tokens.items() if v.user_id != user_id}
        self.s.shares = {s for s in self.s.shares if s[2] != user_id}
        for wf in [w for w in self.s.workflows.values() if w.owner_id == user_id]:
            self.delete_workflow(wf.id)
        for run_id in [k for k, r in self.s.runs.items() if r.owner_id == user_id]:
            self.delete_run(run_id)
        for sub_id in [k for k, w in self.s.webhooks.items() if w.owner_id == user_id]:
            self.delete_subscription(sub_id)
        for graph_id in [k for k, g in self.s.graphs.items() if g.owner_id == user_id]:
            self.delete_graph(graph_id)
        self.s.secrets = {k: v for k, v in self.s.secrets.items() if k[0] != user_id}
        self.s.quotas.pop(user_id, None)
        self.s.usage.pop(user_id, None)
        return True

    # -- tokens ---------------------------------------------------------------------------
    def add_token(self, token: Token) -> None:
        for other in self.s.tokens.values():
            if other.token_hash == token.token_hash or (
                token.name is not None
                and other.user_id == token.user_id
                and other.name == token.name
            ):
                raise AlreadyExists("an object with the same unique name already exists")
        self.s.tokens[token.id] = token

    def find_token(self, token_hash: str) -> tuple[Token, User] | None:
        for token in self.s.tokens.values():
            if token.token_hash == token_hash:
                return token, self.s.users[token.user_id]
        return None

    def list_tokens(self, user_id: str) -> list[Token]:
        mine = [t for t in self.s.tokens.values() if t.user_id == user_id]
        return sorted(mine, key=lambda t: (t.created_at, t.id), reverse=True)

    def get_token(self, token_id: str) -> Token | None:
        return self.s.tokens.get(token_id)

    def revoke_token(self, token_id: str, now: datetime) -> bool:
        token = self.s.tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return False
        self.s.tokens[token_id] = dataclasses.replace(token, revoked_at=now)
        return True

    def revoke_user_tokens(
        self, user_id: str, now: datetime, *, keep_token_id: str | None = None
    ) -> int:
        ids = [
            t.id
            for t in self.s.tokens.values()
            if t.user_id == user_id and t.id != keep_token_id and t.revoked_at is None
        ]
        for token_id in ids:
            self.revoke_token(token_id, now)
        return len(ids)

    def touch_token(self, token_id: str, now: datetime) -> None:
        token = self.s.tokens.get(token_id)
        if token is not None:
            self.s.tokens[token_id] = dataclasses.replace(token, last_used_at=now)

    # -- login throttling -----------------------------------------------------------------
    def get_throttles(self, keys: list[str]) -> list[Throttle]:
        return [self.s.throttles[k] for k in keys if k in self.s.throttles]

    def update_throttle(
        self, key: str, change: Callable[[Throttle | None], Throttle | None]
    ) -> Throttle | None:
        new = change(self.s.throttles.get(key))
        if new is None:
            self.s.throttles.pop(key, None)
        else:
            self.s.throttles[key] = new
        return new

    # -- sharing --------------------------------------------------------------------------
    def share(self, kind: str, object_id: str, user_id: str) -> None:
        self.s.shares.add((kind, object_id, user_id))

    def unshare(self, kind: str, object_id: str, user_id: str) -> bool:
        if (kind, object_id, user_id) not in self.s.shares:
            return False
        self.s.shares.discard((kind, object_id, user_id))
        return True

    def shared_with(self, kind: str, object_id: str) -> set[str]:
        return {u for k, o, u in self.s.shares if k == kind and o == object_id}

    # -- audit log ------------------------------------------------------------------------
    def add_audit(
        self,
        at: datetime,
        action: str,
        *,
        actor_id: str | None,
        actor_name: str | None,
        target: str | None = None,
        address: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        entry_id = len(self.s.audit) + 1
        self.s.audit.append(
            AuditEntry(entry_id, at, actor_id, actor_name, action, target, address, details or {})
        )
        return entry_id

    def list_audit(
        self, *, limit: int = 100, before_id: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        rows = [
            e
            for e in reversed(self.s.audit)
            if (before_id is None or e.id < before_id) and (action is None or e.action == action)
        ]
        return rows[:limit]

    # -- workflows ------------------------------------------------------------------------
    def _named(self, wf: Workflow) -> Workflow:
        return dataclasses.replace(wf, owner_name=self.s.users[wf.owner_id].username)

    def add_workflow(self, workflow: Workflow) -> None:
        if workflow.owner_id not in self.s.users or self.find_workflow(
            workflow.owner_id, workflow.name, workflow.version
        ):
            raise AlreadyExists("an object with the same unique name already exists")
        self.s.workflows[workflow.id] = workflow

    def get_workflow(self, workflow_id: str) -> Workflow | None:
        wf = self.s.workflows.get(workflow_id)
        return self._named(wf) if wf else None

    def find_workflow(self, owner_id: str, name: str, version: str | None) -> Workflow | None:
        found = [
            w
            for w in self.s.workflows.values()
            if w.owner_id == owner_id and w.name == name and version in (None, w.version)
        ]
        return self._named(max(found, key=lambda w: w.id)) if found else None

    def list_workflows(
        self,
        viewer_id: str | None,
        *,
        name: str | None = None,
        owner_id: str | None = None,
        before_id: str | None = None,
        limit: int = 100,
    ) -> list[Workflow]:
        def visible(w: Workflow) -> bool:
            return (
                viewer_id is None
                or w.owner_id == viewer_id
                or w.visibility is Visibility.PUBLIC
                or (
                    w.visibility is Visibility.SHARED
                    and (WORKFLOW_KIND, w.id, viewer_id) in self.s.shares
                )
            )

        rows = [
            self._named(w)
            for w in sorted(self.s.workflows.values(), key=lambda w: w.id, reverse=True)
            if visible(w)
            and name in (None, w.name)
            and owner_id in (None, w.owner_id)
            and (before_id is None or w.id < before_id)
        ]
        return rows[:limit]

    def update_workflow(
        self,
        workflow_id: str,
        *,
        visibility: Visibility | None = None,
        trusted: bool | None = None,
        archive_bytes: int | None = None,
    ) -> Workflow | None:
        wf = self.s.workflows.get(workflow_id)
        if wf is None:
            return None
        changes: dict[str, Any] = {}
        if visibility is not None:
            changes["visibility"] = visibility
        if trusted is not None:
            changes["trusted"] = trusted
        if archive_bytes is not None:
            changes["archive_bytes"] = archive_bytes
        self.s.workflows[workflow_id] = dataclasses.replace(wf, **changes)
        return self.get_workflow(workflow_id)

    def delete_workflow(self, workflow_id: str) -> bool:
        self.s.shares = {
            s for s in self.s.shares if not (s[0] == WORKFLOW_KIND and s[1] == workflow_id)
        }
        for run in [r for r in self.s.runs.values() if r.workflow_id == workflow_id]:
            self.s.runs[run.id] = dataclasses.replace(run, workflow_id=None)
        return self.s.workflows.pop(workflow_id, None) is not None
