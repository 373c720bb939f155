"""/api/v1/admin over a real HTTP server: user administration and the audit log."""

from __future__ import annotations

import pytest

from tests.helpers import STRONG, LiveServer, register_and_login, unique

API = "/api/v1"


@pytest.fixture(scope="module")
def admin_token(server: LiveServer) -> str:
    name = unique("root")
    server.ctx.accounts.create_user(name, STRONG, admin=True)
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
    return str(r.json()["token"])


def test_users_cannot_use_admin_routes(server: LiveServer) -> None:
    token = register_and_login(server, unique("plain"))
    with server.client(token) as c:
        for method, path in [
            ("GET", "/admin/users"),
            ("GET", "/admin/audit"),
            ("POST", "/admin/users/x/promote"),
            ("DELETE", "/admin/users/x"),
        ]:
            r = c.request(method, API + path)
            assert r.status_code == 403, path
            assert r.json()["error"]["code"] == "permission_denied"


def test_disable_ends_sessions_at_once_and_enable_restores_login(
    server: LiveServer, admin_token: str
) -> None:
    name = unique("dis")
    user_token = register_and_login(server, name)
    with server.client(admin_token) as admin:
        r = admin.post(f"{API}/admin/users/{name}/disable")
        assert r.status_code == 200 and r.json()["status"] == "disabled"
        with server.client(user_token) as c:
            assert c.get(f"{API}/auth/me").status_code == 401
            r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
            assert r.status_code == 403
        assert admin.post(f"{API}/admin/users/{name}/disable").status_code == 409
        assert admin.post(f"{API}/admin/users/{name}/enable").json()["status"] == "active"
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
        assert r.status_code == 200


def test_promote_demote_reset_delete(server: LiveServer, admin_token: str) -> None:
    name = unique("adm")
    user_token = register_and_login(server, name)
    with server.client(admin_token) as admin:
        assert admin.post(f"{API}/admin/users/{name}/promote").json()["role"] == "admin"
        assert admin.post(f"{API}/admin/users/{name}/promote").status_code == 409
        with server.client(user_token) as c:
            assert c.get(f"{API}/admin/users").status_code == 200
        assert admin.post(f"{API}/admin/users/{name}/demote").json()["role"] == "user"
        new = "reset by the admin today"
        r = admin.put(f"{API}/admin/users/{name}/password", json={"password": "123123123123"})
        assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "too_guessable"
        r = admin.put(f"{API}/admin/users/{name}/password", json={"password": new})
        assert r.status_code == 200
        with server.client(user_token) as c:
            assert c.get(f"{API}/auth/me").status_code == 401  # sessions ended
        with server.client() as c:
            r = c.post(f"{API}/auth/login", json={"username": name, "password": new})
            assert r.status_code == 200
        assert admin.delete(f"{API}/admin/users/{name}").status_code == 204
        assert admin.delete(f"{API}/admin/users/{name}").status_code == 404
        assert admin.post(f"{API}/admin/users/{name}/approve").status_code == 404
        users = {u["username"] for u in admin.get(f"{API}/admin/users").json()}
        assert name not in users


def test_admin_creates_users_and_checks_the_policy(server: LiveServer, admin_token: str) -> None:
    name = unique("made")
    with server.client(admin_token) as admin:
        r = admin.post(f"{API}/admin/users", json={"username": name, "password": "short"})
        assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "min_length"
        r = admin.post(f"{API}/admin/users", json={"username": name, "password": "iloveyou1234"})
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["code"] == "password_rejected"
        assert (
            error["details"]["rule"] == "too_guessable" and "too easy to guess" in error["message"]
        )
        r = admin.post(
            f"{API}/admin/users", json={"username": name, "password": STRONG, "admin": True}
        )
        assert r.status_code == 201 and r.json()["role"] == "admin"
        r = admin.post(f"{API}/admin/users/{name}/unknown-action")
        assert r.status_code == 422


def test_audit_log_records_who_what_when_where(server: LiveServer, admin_token: str) -> None:
    name = unique("aud")
    token = register_and_login(server, name)
    with server.client() as c:
        c.post(f"{API}/auth/login", json={"username": name, "password": "wrong wrong wrong"})
    with server.client(token) as c:
        tid = c.post(f"{API}/auth/tokens", json={"name": "audited"}).json()["id"]
        c.delete(f"{API}/auth/tokens/{tid}")
    with server.client(admin_token) as admin:
        admin.post(f"{API}/admin/users/{name}/disable")
        page = admin.get(f"{API}/admin/audit", params={"limit": 1000}).json()
    mine = [e for e in page["entries"] if e["target"] in (name, tid) or e["actor_name"] == name]
    actions = [e["action"] for e in reversed(mine)]
    for expected in (
        "register",
        "login",
        "login.failed",
        "token.create",
        "token.revoke",
        "admin.disable",
    ):
        assert expected in actions
    disable = next(e for e in mine if e["action"] == "admin.disable")
    assert disable["actor_name"] != name and disable["address"] == "127.0.0.1"
    assert disable["at"].endswith("Z")


def test_audit_pagination(server: LiveServer, admin_token: str) -> None:
    with server.client(admin_token) as admin:
        first = admin.get(f"{API}/admin/audit", params={"limit": 2}).json()
        assert len(first["entries"]) == 2 and first["next_before"] is not None
        second = admin.get(
            f"{API}/admin/audit", params={"limit": 2, "before": first["next_before"]}
        ).json()
    assert second["entries"][0]["id"] < first["entries"][-1]["id"]


def test_quotas_are_set_by_admins_only_and_bad_values_change_nothing(
    server: LiveServer, admin_token: str
) -> None:
    name = unique("quo")
    user_token = register_and_login(server, name)
    with server.client(user_token) as c:
        for method, path in [
            ("GET", "/admin/quotas"),
            ("GET", f"/admin/users/{name}/quotas"),
            ("PUT", f"/admin/users/{name}/quotas"),
            ("GET", "/admin/status"),
        ]:
            assert c.request(method, API + path, json={}).status_code == 403, path
        me = c.get(f"{API}/auth/me").json()
        assert me["usage"] == {"active_runs": 0, "queued_runs": 0, "stored_bytes": 0, "cpus": 0}
    with server.client(admin_token) as admin:
        url = f"{API}/admin/users/{name}/quotas"
        r = admin.put(url, json={"max_active_runs": 3, "max_cpus": 2.5})
        assert r.status_code == 200, r.text
        assert r.json()["override"] == {
            "max_active_runs": 3,
            "max_cpus": 2.5,
            "max_stored_bytes": None,
        }
        for bad in ({"max_active_runs": 0}, {"max_cpus": -1}, {"max_stored_bytes": "1G"}, {"x": 1}):
            r = admin.put(url, json=bad)
            assert r.status_code == 422, (bad, r.text)
        r = admin.put(url, json={"max_cpus": None})  # back to the default; the rest stays
        assert r.json()["override"]["max_active_runs"] == 3
        assert r.json()["override"]["max_cpus"] is None
        assert admin.put(f"{API}/admin/users/nobody-{name}/quotas", json={}).status_code == 404
        listed = {q["username"]: q for q in admin.get(f"{API}/admin/quotas").json()}
        assert listed[name]["quota"]["max_active_runs"] == 3
        status = admin.get(f"{API}/admin/status").json()
        assert status["disk"]["free_bytes"] > 0
    with server.client(user_token) as c:
        assert c.get(f"{API}/auth/me").json()["quota"]["max_active_runs"] == 3


def test_a_users_priority_is_their_own_an_admins_is_global(
    server: LiveServer, admin_token: str
) -> None:
    name = unique("pri")
    user_token = register_and_login(server, name)
    spec = 'name: idle\nversion: "1"\nsteps:\n  main:\n    run: [true]\n'
    with server.client(user_token) as c:
        r = c.post(f"{API}/workflows", content=spec, headers={"content-type": "application/yaml"})
        assert r.status_code == 201, r.text
        r = c.post(f"{API}/runs", json={"workflow": "idle@1", "resources": {"priority": 50}})
        run = r.json()
        assert (run["priority"], run["admin_priority"]) == (50, 0)
    with server.client(admin_token) as admin:
        r = admin.put(f"{API}/runs/{run['id']}/resources", json={"priority": 9})
        assert r.status_code == 200, r.text
        assert (r.json()["priority"], r.json()["admin_priority"]) == (50, 9)
