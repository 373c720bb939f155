"""``flowdeck serve`` with tracemalloc on, for :mod:`bench.queue_memory`:
``python -m bench.traced_server serve``.

``$FLOWDECK_BENCH_TRACE`` names a folder: for each ``NAME.want`` put there, a thread writes
``NAME.snap`` (a tracemalloc snapshot) and ``NAME.types.json`` (the count of objects the
garbage collector tracks, by type), then removes ``NAME.want``.  Tracing starts at the first
request: the server starts and takes logins at full speed, and what was allocated before
and stays is in no snapshot (a diff against the first shows what grew).
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

FRAMES = 8  # frames kept per allocation: enough to reach the caller in flowdeck


def _watch(folder: Path) -> None:
    while True:
        for want in sorted(folder.glob("*.want")):
            if not tracemalloc.is_tracing():
                tracemalloc.start(FRAMES)
            gc.collect()
            tracemalloc.take_snapshot().dump(str(want.with_suffix(".snap")))
            types = Counter(
                f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
            )
            want.with_suffix(".types.json").write_text(json.dumps(types))
            want.unlink()
        time.sleep(0.2)


def main() -> None:
    folder = Path(os.environ["FLOWDECK_BENCH_TRACE"])
    threading.Thread(target=_watch, args=(folder,), daemon=True, name="trace").start()
    sys.argv = ["flowdeck", *sys.argv[1:]]
    runpy.run_module("flowdeck", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
