"""A server's services and scheduler in this process, for the benchmarks that leave HTTP
and step processes out (runtime, fairshare, queue_window): a real store, the real scheduler
and committer, and a fake executor."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import scratch_dir
from flowdeck.config import Settings
from flowdeck.domain.privilege import Actor
from flowdeck.domain.workflows import Visibility
from flowdeck.executors.fake import FakeExecutor
from flowdeck.runtime.ports import PortRuntime
from flowdeck.runtime.scheduler import Scheduler
from flowdeck.services.context import Context, build_context

ONE = b'name: one\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


@contextmanager
def scheduled(
    executor: FakeExecutor,
    users: int = 1,
    specs: tuple[bytes, ...] = (ONE,),
    **settings: Any,
) -> Iterator[tuple[Context, Scheduler, list[Actor]]]:
    """(context, started scheduler, ``users`` actors who pushed ``specs``) on a fresh data
    directory under the scratch directory; closed afterwards."""
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        config = Settings(data_dir=Path(tmp) / "data", registration="open", **settings)
        ctx = build_context(config)
        actors = []
        for i in range(users):
            user = ctx.accounts.register(f"user{i:03d}", "timing passphrase 1234")
            actor = Actor(user.id, user.username, user.role)
            for spec in specs:
                ctx.workflows.push_spec(actor, spec, Visibility.PRIVATE)
            actors.append(actor)
        scheduler = Scheduler(
            ctx.store,
            config,
            {"local": executor},
            lambda wid: ctx.workflows.root / wid,
            ports=PortRuntime(ctx.store, ctx.ports.hub),
        )
        scheduler.start()
        ctx.runs.scheduler = scheduler
        try:
            yield ctx, scheduler, actors
        finally:
            ctx.close()
