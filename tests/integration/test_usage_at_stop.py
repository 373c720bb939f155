"""Fair-share usage is written at most once a second with the scheduler's commits; what
the last second recorded is written when the server stops, so a restart forgets none."""

from __future__ import annotations

import time
from pathlib import Path

from flowdeck.store import open_store
from tests.helpers import live_server, make_settings, register_and_login

NAP = 'name: nap\nversion: "1"\nsteps:\n  main:\n    run: [sleep, "0.3"]\n'


def test_the_usage_of_the_last_second_is_written_at_stop(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", slots=3)
    with live_server(settings) as srv:
        token = register_and_login(srv, "ursula")
        with srv.client(token) as c:
            r = c.post("/api/v1/workflows", content=NAP, headers={"content-type": "text/yaml"})
            assert r.status_code in (200, 201), r.text
            ids = [
                c.post("/api/v1/runs", json={"workflow": "nap@1", "start": True}).json()["id"]
                for _ in range(3)
            ]
            deadline = time.monotonic() + 60
            while any(c.get(f"/api/v1/runs/{i}").json()["state"] != "succeeded" for i in ids):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            user_id = c.get("/api/v1/auth/me").json()["id"]
    # stopped right after the three ends, all within a second of each other
    store = open_store(settings.resolved_database_url)
    try:
        with store.read() as tx:
            slot_seconds, _ = tx.list_usage()[user_id]
    finally:
        store.close()
    assert slot_seconds >= 3 * 0.3 * 0.99  # each step held one slot 0.3 s (decay: minutes)
