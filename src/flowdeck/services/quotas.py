"""Per-user quotas and usage: admins set overrides of the settings' defaults; users see
theirs (``GET /auth/me``); uploads past the quota of stored bytes are refused here, and the
scheduler holds queued runs back at the others (``runtime/admission.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain import quotas
from flowdeck.domain.accounts import User
from flowdeck.domain.privilege import Actor
from flowdeck.domain.quotas import Quota
from flowdeck.domain.runs import RunState, StepState
from flowdeck.domain.spec import WorkflowSpec
from flowdeck.domain.workflows import Workflow
from flowdeck.errors import InvalidInput, NotFound, PermissionDenied, QuotaExceeded
from flowdeck.store.base import Store, Tx

STARTED = (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)


@dataclass(frozen=True)
class Usage:
    active_runs: int  # running, paused or stopping
    queued_runs: int
    stored_bytes: int
    cpus: float = 0.0  # slots of this machine held by the user's running steps

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_runs": self.active_runs,
            "queued_runs": self.queued_runs,
            "stored_bytes": self.stored_bytes,
            "cpus": self.cpus,
        }


@dataclass(frozen=True)
class UserQuota:
    """A user's quota as it applies, the override an admin set (may be empty) and their
    usage now."""

    user: User
    quota: Quota
    override: Quota
    usage: Usage


class Quotas:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        spec_of: Callable[[Workflow], WorkflowSpec] | None = None,
    ) -> None:
        self.store = store
        s = settings
        self.defaults = Quota(s.quota_max_active_runs, s.quota_max_cpus, s.quota_max_stored_bytes)
        self.spec_of = spec_of  # a workflow version's parsed spec (kept by the runs service)

    def cpus_held(self, tx: Tx, owner_id: str) -> float:
        """Slots held now by the running steps of ``owner_id``'s runs, from the store (as
        the scheduler counts them: a step on Slurm or a child run holds none)."""
        if self.spec_of is None:
            return 0.0
        held = 0.0
        runs = tx.list_runs(owner_id, owner_id=owner_id, states=list(STARTED), limit=1000)
        for run in runs:
            if run.resources.get("executor") == "slurm" or run.workflow_id is None:
                continue
            wf = tx.get_workflow(run.workflow_id)
            if wf is None:
                continue
            steps = self.spec_of(wf).steps
            for rec in tx.list_steps(run.id):
                step = steps.get(rec.name)
                if rec.state is StepState.RUNNING and step is not None and step.uses is None:
                    held += float(step.resources.cpus)
        return held

    def _of(
        self, tx: Tx, user: User, stored: dict[str, int] | None = None, cpus: bool = False
    ) -> UserQuota:
        override = tx.get_quota(user.id) or Quota()
        counts = tx.count_runs_by_state(user.id)
        if stored is None:
            stored = tx.stored_bytes_by_owner(user.id)
        usage = Usage(
            active_runs=sum(counts.get(s, 0) for s in STARTED),
            queued_runs=counts.get(RunState.QUEUED, 0),
            stored_bytes=stored.get(user.id, 0),
            cpus=self.cpus_held(tx, user.id) if cpus else 0.0,
        )
        return UserQuota(user, override.over(self.defaults), override, usage)

    def mine(self, user: User) -> UserQuota:
        with self.store.read() as tx:
            return self._of(tx, user, cpus=True)

    @staticmethod
    def _require_admin(actor: Actor | None) -> None:
        """An admin, or (None) an operator on the server's machine."""
        if actor is not None and not actor.is_admin:
            raise PermissionDenied("this needs the admin role")

    def _user(self, tx: Tx, username: str) -> User:
        user = tx.get_user_by_name(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def show(self, actor: Actor | None, username: str) -> UserQuota:
        self._require_admin(actor)
        with self.store.read() as tx:
            return self._of(tx, self._user(tx, username), cpus=True)

    def list(self, actor: Actor | None) -> list[UserQuota]:
        """Every user's quota and usage (the admin users page)."""
        self._require_admin(actor)
        with self.store.read() as tx:
            stored = tx.stored_bytes_by_owner()
            return [self._of(tx, u, stored) for u in tx.list_users()]

    def set(
        self,
        actor: Actor | None,
        username: str,
        changes: dict[str, Any],
        address: str | None = None,
    ) -> UserQuota:
        """Change a user's override: each of ``changes`` (``max_active_runs``, ``max_cpus``,
        ``max_stored_bytes``) set, or reset to the default with None; others unchanged."""
        self._require_admin(actor)
        known = set(Quota().as_dict())
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidInput(f"unknown quota {unknown[0]!r}", field=unknown[0])
        with self.store.write() as tx:
            user = self._user(tx, username)
            old = tx.get_quota(user.id) or Quota()
            new = Quota(**{**old.as_dict(), **changes})
            tx.set_quota(user.id, new, clock.now())
            tx.add_audit(
                clock.now(),
                "admin.set_quota",
                actor_id=actor.user_id if actor else None,
                actor_name=actor.username if actor else None,
                target=username,
                address=address,
                details=new.as_dict(),
            )
            return self._of(tx, user)

    def check_stored(self, tx: Tx, owner_id: str, adding: int, replacing: int = 0) -> None:
        """Refuse (413) bytes that would take ``owner_id`` past their stored-bytes quota."""
        override = tx.get_quota(owner_id) or Quota()
        limit = override.over(self.defaults).max_stored_bytes
        if limit is None:
            return
        used = tx.stored_bytes_by_owner(owner_id).get(owner_id, 0) - replacing
        if used + adding > limit:
            raise QuotaExceeded(
                quotas.stored_bytes_message(used, adding, limit),
                quota="max_stored_bytes",
                used_bytes=used,
                adding_bytes=adding,
                limit_bytes=limit,
            )
