"""A one-screen summary of a flowdeck installation for operators (``flowdeck admin
status``), read from the store: what every server instance shares."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flowdeck import clock
from flowdeck.config import Settings
from flowdeck.domain.runs import ACTIVE_STATES, RunState
from flowdeck.executors import cwlpool
from flowdeck.executors.cgroups import describe
from flowdeck.store.base import Store

RECENT_FAILURES = 5
FAILED = [RunState.FAILED, RunState.SYSTEM_ERROR]


@dataclass(frozen=True)
class Failure:
    run_id: str
    owner: str
    workflow: str
    state: str
    finished_at: datetime | None
    message: str


@dataclass(frozen=True)
class InstanceLoad:
    """A live server instance and what it runs."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_age_s: float
    active_runs: int
    running_steps: int


@dataclass(frozen=True)
class Summary:
    at: datetime
    instances: int  # server instances with a live lease
    queue_depth: int
    oldest_queued_s: float | None
    running_steps: int
    slots_total: int
    active_runs: dict[str, int] = field(default_factory=dict)
    recent_failures: list[Failure] = field(default_factory=list)
    sandbox: str = "bwrap"  # the step sandbox (setting sandbox): "off" is unsafe
    sandbox_scope: str = "run"  # a sandbox per run (of several steps) or per step
    step_limits: str = ""  # what bounds a step's resources on this host
    live: list[InstanceLoad] = field(default_factory=list)  # the instances, oldest first
    cwl_workers: str = ""  # the warm cwltool workers (executors/cwlpool.py)
    stored_bytes: dict[str, int] = field(default_factory=dict)  # by username: uploads, products
    disk_free_bytes: int | None = None  # on the file system of the data directory
    disk_total_bytes: int | None = None

    @property
    def stored_bytes_total(self) -> int:
        return sum(self.stored_bytes.values())

    @property
    def slots_used(self) -> int:
        """Running steps, one slot each (a step asking for more cpus holds more)."""
        return self.running_steps

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "instances": self.instances,
            "live_instances": [
                {
                    "id": i.id,
                    "host": i.host,
                    "pid": i.pid,
                    "started_at": i.started_at.isoformat(),
                    "heartbeat_age_s": round(i.heartbeat_age_s, 1),
                    "active_runs": i.active_runs,
                    "running_steps": i.running_steps,
                }
                for i in self.live
            ],
            "queue_depth": self.queue_depth,
            "oldest_queued_s": self.oldest_queued_s,
            "running_steps": self.running_steps,
            "slots_used": self.slots_used,
            "slots_total": self.slots_total,
            "sandbox": self.sandbox,
            "sandbox_scope": self.sandbox_scope,
            "step_limits": self.step_limits,
            "cwl_workers": self.cwl_workers,
            "disk": {
                "stored_bytes_total": self.stored_bytes_total,
                "stored_bytes_by_user": self.stored_bytes,
                "free_bytes": self.disk_free_bytes,
                "total_bytes": self.disk_total_bytes,
            },
            "active_runs": self.active_runs,
            "recent_failures": [
                {
                    "run_id": f.run_id,
                    "owner": f.owner,
                    "workflow": f.workflow,
                    "state": f.state,
                    "finished_at": f.finished_at.isoformat() if f.finished_at else None,
                    "message": f.message,
                }
                for f in self.recent_failures
            ],
        }


def summary(store: Store, settings: Settings) -> Summary:
    now = clock.now()
    live_after = now - timedelta(seconds=settings.lease_ttl_s)
    with store.read() as tx:
        active = tx.count_runs_in(sorted(ACTIVE_STATES))
        oldest = tx.oldest_queued_at()
        steps = tx.count_running_steps()
        instances = [
            i for i in tx.list_instances() if i.stopped_at is None and i.heartbeat_at >= live_after
        ]
        load = tx.load_by_instance()
        failed = tx.list_runs(None, states=FAILED, limit=RECENT_FAILURES)
        owners = {r.owner_id: tx.get_user(r.owner_id) for r in failed}
        stored = tx.stored_bytes_by_owner()
        names = {u.id: u.username for u in tx.list_users()} if stored else {}
    try:
        disk = shutil.disk_usage(settings.data_dir)
    except OSError:
        disk = None
    failures = [
        Failure(
            run_id=r.id,
            owner=u.username if (u := owners.get(r.owner_id)) else r.owner_id,
            workflow=r.workflow_ref,
            state=r.state.value,
            finished_at=r.finished_at,
            message=str((r.error or {}).get("message", ""))[:200],
        )
        for r in failed
    ]
    return Summary(
        at=now,
        instances=len(instances),
        queue_depth=active.get(RunState.QUEUED, 0),
        oldest_queued_s=(now - oldest).total_seconds() if oldest is not None else None,
        running_steps=steps,
        slots_total=settings.slots * max(1, len(instances)),
        active_runs={s.value: active.get(s, 0) for s in RunState if s in ACTIVE_STATES},
        recent_failures=failures,
        stored_bytes={
            names.get(owner, owner): n
            for owner, n in sorted(stored.items(), key=lambda item: -item[1])
        },
        disk_free_bytes=disk.free if disk else None,
        disk_total_bytes=disk.total if disk else None,
        sandbox=settings.sandbox,
        sandbox_scope=settings.sandbox_scope,
        step_limits=describe(settings.step_uids, settings.step_cgroups == "auto"),
        live=[
            InstanceLoad(
                i.id,
                i.host,
                i.pid,
                i.started_at,
                (now - i.heartbeat_at).total_seconds(),
                *load.get(i.id, (0, 0)),
            )
            for i in sorted(instances, key=lambda i: i.started_at)
        ],
        cwl_workers=cwlpool.describe(
            settings.cwl_warm_workers, settings.sandbox, settings.step_uids, settings.data_dir
        ),
    )
