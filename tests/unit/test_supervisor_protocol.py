"""The step supervisor's protocol version follows what goes over the wire."""

from __future__ import annotations

import dataclasses

from flowdeck.executors.base import Launch
from flowdeck.executors.wire import PROTOCOL, SPOKEN

# The fields of a launch, as each protocol version sends them.
LAUNCH_FIELDS = {
    1: (
        "key", "cwd", "env", "stdout", "stderr", "argv", "python", "code_dir", "kwargs",
        "stdin", "cpu_seconds", "memory_bytes", "file_size_bytes", "max_processes",
        "walltime_s", "record", "sandbox", "cpus", "slurm_options", "foreach_limit",
    ),
}  # fmt: skip


def test_a_changed_launch_changes_the_protocol() -> None:
    fields = tuple(f.name for f in dataclasses.fields(Launch))
    assert fields == LAUNCH_FIELDS[PROTOCOL], (
        "Launch changed: raise PROTOCOL in flowdeck/executors/wire.py (and say here what "
        "the new version sends)"
    )


def test_the_server_speaks_its_own_protocol() -> None:
    assert PROTOCOL in SPOKEN
