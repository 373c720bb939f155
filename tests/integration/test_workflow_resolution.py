"""Run creation resolves one's own workflow versions from memory: never a deleted one."""

from __future__ import annotations

from tests.helpers import LiveServer, register_and_login, unique

API = "/api/v1"
SPEC = 'name: gone\nversion: "1"\nsteps:\n  t: {run: [/bin/true]}\n'


def test_a_deleted_version_cannot_be_run_right_after(server: LiveServer) -> None:
    token = register_and_login(server, unique("res"))
    with server.client(token) as c:
        r = c.post(f"{API}/workflows", content=SPEC, headers={"content-type": "text/yaml"})
        assert r.status_code == 201, r.text
        first = c.post(f"{API}/runs", json={"workflow": "gone@1"})
        assert first.status_code == 201, first.text
        assert c.post(f"{API}/runs/{first.json()['id']}/kill").status_code == 200
        assert c.delete(f"{API}/workflows/gone@1").status_code == 204
        again = c.post(f"{API}/runs", json={"workflow": "gone@1"})
        assert again.status_code == 404, again.text
        assert again.json()["error"]["code"] == "not_found"
        # pushed again, it is a new version object: runs use it
        assert (
            c.post(
                f"{API}/workflows", content=SPEC, headers={"content-type": "text/yaml"}
            ).status_code
            == 201
        )
        made = c.post(f"{API}/runs", json={"workflow": "gone@1", "start": True})
        assert made.status_code == 201, made.text
