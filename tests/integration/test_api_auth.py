"""Every /api/v1/auth route, its successes and failures, over a real HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import STRONG, LiveServer, live_server, make_settings, register_and_login, unique

API = "/api/v1"


def test_register_login_me_logout(server: LiveServer) -> None:
    name = unique("alice")
    with server.client() as c:
        r = c.post(f"{API}/auth/register", json={"username": name, "password": STRONG})
        assert r.status_code == 201
        assert r.json()["status"] == "active" and r.json()["role"] == "user"
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] > 3600
        assert body["expires_at"].endswith("Z")
    with server.client(body["token"]) as c:
        assert c.get(f"{API}/auth/me").json()["username"] == name
        assert c.post(f"{API}/auth/logout").status_code == 204
        r = c.get(f"{API}/auth/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"


def test_stored_password_hash_is_argon2id(server: LiveServer) -> None:
    name = unique("hash")
    register_and_login(server, name)
    with server.ctx.store.read() as tx:
        user = tx.get_user_by_name(name)
    assert user is not None and user.password_hash.startswith("$argon2id$")


@pytest.mark.parametrize(
    ("password", "rule", "words"),
    [
        ("short", "min_length", "at least 12"),
        ("y" * 129, "max_length", "at most 128"),
        ("Qwerty123456", "common_password", "commonly used"),
        ("{name} is my password", "contains_username", "username"),
        ("aaaaaaaaaaaa", "too_guessable", "Repeats"),
        (" " * 12, "too_guessable", "Repeats"),
        ("123456789012", "too_guessable", "commonly used"),
        ("abcdefghijkl", "too_guessable", "Sequences"),
        ("qwertyuiopasdf", "too_guessable", "commonly used"),
        ("iloveyou1234", "too_guessable", "commonly used"),
        ("123123123123", "too_guessable", "Repeats"),
    ],
)
def test_register_password_policy(server: LiveServer, password: str, rule: str, words: str) -> None:
    name = unique("pol")
    with server.client() as c:
        r = c.post(
            f"{API}/auth/register", json={"username": name, "password": password.format(name=name)}
        )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "password_rejected" and err["details"]["rule"] == rule
    assert words in err["message"]


def test_register_errors(server: LiveServer) -> None:
    name = unique("dup")
    register_and_login(server, name)
    with server.client() as c:
        r = c.post(f"{API}/auth/register", json={"username": name.upper(), "password": STRONG})
        assert r.status_code == 409 and "already taken" in r.json()["error"]["message"]
        r = c.post(f"{API}/auth/register", json={"username": "a b", "password": STRONG})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "username"


def test_wrong_password_and_unknown_user_get_the_same_answer(server: LiveServer) -> None:
    name = unique("same")
    register_and_login(server, name)
    with server.client() as c:
        a = c.post(f"{API}/auth/login", json={"username": name, "password": "wrong" * 4})
        b = c.post(f"{API}/auth/login", json={"username": unique("ghost"), "password": "x" * 20})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, login_max_failures=3, login_lockout_seconds=600)
    with live_server(settings) as srv:
        yield srv


def test_throttling_answers_429_even_with_the_right_password(strict_server: LiveServer) -> None:
    register_and_login(strict_server, "victim")
    with strict_server.client() as c:
        for _ in range(3):
            r = c.post(f"{API}/auth/login", json={"username": "victim", "password": "guess" * 3})
            assert r.status_code == 401
        r = c.post(f"{API}/auth/login", json={"username": "victim", "password": STRONG})
    assert r.status_code == 429
    assert 590 <= int(r.headers["retry-after"]) <= 600
    assert r.json()["error"]["code"] == "too_many_attempts"


def test_throttling_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, login_max_failures=2)
    with live_server(settings) as srv:
        register_and_login(srv, "victim")
        with srv.client() as c:
            for _ in range(2):
                c.post(f"{API}/auth/login", json={"username": "victim", "password": "guess" * 3})
    with live_server(settings) as srv, srv.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": "victim", "password": STRONG})
    assert r.status_code == 429


def test_registration_modes(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path / "a", registration="approval")) as srv:
        with srv.client() as c:
            r = c.post(f"{API}/auth/register", json={"username": "waiting", "password": STRONG})
            assert r.status_code == 201 and r.json()["status"] == "pending"
            r = c.post(f"{API}/auth/login", json={"username": "waiting", "password": STRONG})
            assert r.status_code == 403 and "awaiting approval" in r.json()["error"]["message"]
        srv.ctx.accounts.set_status(None, "waiting", "approve")
        with srv.client() as c:
            r = c.post(f"{API}/auth/login", json={"username": "waiting", "password": STRONG})
            assert r.status_code == 200
    closed = make_settings(tmp_path / "c", registration="closed")
    with live_server(closed) as srv, srv.client() as c:
        r = c.post(f"{API}/auth/register", json={"username": "nobody", "password": STRONG})
    assert r.status_code == 403 and r.json()["error"]["code"] == "registration_closed"


def test_changing_the_password_ends_other_sessions_and_tokens(server: LiveServer) -> None:
    name = unique("chg")
    first = register_and_login(server, name)
    with server.client() as c:
        second = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG}).json()[
            "token"
        ]
    with server.client(first) as c:
        api_token = c.post(f"{API}/auth/tokens", json={"name": "script"}).json()["token"]
    new = "a different long passphrase"
    with server.client(first) as c:
        r = c.post(
            f"{API}/auth/password", json={"current_password": "nope" * 4, "new_password": new}
        )
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "current_password"
        r = c.post(f"{API}/auth/password", json={"current_password": STRONG, "new_password": "x"})
        assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "min_length"
        r = c.post(
            f"{API}/auth/password", json={"current_password": STRONG, "new_password": "1" * 12}
        )
        assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "too_guessable"
        r = c.post(f"{API}/auth/password", json={"current_password": STRONG, "new_password": new})
        assert r.status_code == 200 and r.json() == {"ended_sessions": 2}  # by default
        assert c.get(f"{API}/auth/me").status_code == 200  # this session goes on
    with server.client(second) as c:
        assert c.get(f"{API}/auth/me").status_code == 401
    with server.client(api_token) as c:
        assert c.get(f"{API}/auth/me").status_code == 401  # API tokens end too
    with server.client() as c:
        assert (
            c.post(f"{API}/auth/login", json={"username": name, "password": STRONG}).status_code
            == 401
        )
        assert (
            c.post(f"{API}/auth/login", json={"username": name, "password": new}).status_code == 200
        )


def test_changing_the_password_may_keep_other_sessions(server: LiveServer) -> None:
    name = unique("keep")
    first = register_and_login(server, name)
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG})
        second = r.json()["token"]
    with server.client(first) as c:
        r = c.post(
            f"{API}/auth/password",
            json={
                "current_password": STRONG,
                "new_password": "a different long passphrase",
                "end_other_sessions": False,
            },
        )
        assert r.status_code == 200 and r.json() == {"ended_sessions": 0}
    with server.client(second) as c:
        assert c.get(f"{API}/auth/me").status_code == 200


def test_named_api_tokens(server: LiveServer) -> None:
    alice = register_and_login(server, unique("tok"))
    bob = register_and_login(server, unique("tok"))
    with server.client(alice) as c:
        r = c.post(f"{API}/auth/tokens", json={"name": "ci", "expires_in_days": 7})
        assert r.status_code == 201
        created = r.json()
        assert created["token"].startswith("fdk_") and created["kind"] == "api"
        assert c.post(f"{API}/auth/tokens", json={"name": "ci"}).status_code == 409
        r = c.post(f"{API}/auth/tokens", json={"name": "forever", "expires_in_days": 9999})
        assert r.status_code == 422
        listed = c.get(f"{API}/auth/tokens").json()
        assert {t["name"] for t in listed} == {None, "ci"}
        assert all("token" not in t for t in listed)  # secrets are never listed
    with server.client(created["token"]) as c:
        assert c.get(f"{API}/auth/me").status_code == 200
    with server.client(bob) as c:  # another user's token: 404, not 403
        r = c.delete(f"{API}/auth/tokens/{created['id']}")
        assert r.status_code == 404
    with server.client(alice) as c:
        assert c.delete(f"{API}/auth/tokens/{created['id']}").status_code == 204
        assert c.delete(f"{API}/auth/tokens/{created['id']}").status_code == 409
    with server.client(created["token"]) as c:
        assert c.get(f"{API}/auth/me").status_code == 401


@pytest.mark.parametrize(
    ("headers", "query", "code"),
    [
        ({}, "", "authentication_required"),
        ({"Authorization": "Bearer fdk_not-a-real-token"}, "", "invalid_token"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "", "authentication_required"),
        ({"Authorization": "Bearer nonsense"}, "", "invalid_token"),
    ],
)
def test_unauthenticated_requests_get_401(
    server: LiveServer, headers: dict[str, str], query: str, code: str
) -> None:
    with server.client() as c:
        r = c.get(f"{API}/auth/me{query}", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"] == "Bearer"


def test_tokens_are_never_accepted_in_a_url(server: LiveServer) -> None:
    token = register_and_login(server, unique("url"))
    with server.client() as c:
        r = c.get(f"{API}/auth/me", params={"access_token": token})
    assert r.status_code == 422 and "not accepted in URLs" in r.json()["error"]["message"]


def test_every_non_public_route_needs_authentication(server: LiveServer) -> None:
    public = {
        "/healthz",
        "/readyz",
        f"{API}/auth/register",
        f"{API}/auth/login",
        f"{API}/schema/workflow.json",
        f"{API}/schema/run-states",
    }
    with server.client() as c:
        spec = c.get("/openapi.json").json()
        checked = 0
        for path, ops in spec["paths"].items():
            if path in public:
                continue
            url = path.replace("{username}", "someone").replace("{token_id}", "tok_x")
            url = url.replace("{action}", "approve").replace("{ref}", "someone/wf@1")
            for name in ("{run_id}", "{input}", "{step}", "{product_id}"):
                url = url.replace(name, "x")
            for method in ops:
                r = c.request(method.upper(), url, json={})
                assert r.status_code == 401, (method, path, r.text)
                checked += 1
    assert checked >= 12


def test_cookie_sessions_need_csrf_for_changes(server: LiveServer) -> None:
    name = unique("web")
    register_and_login(server, name)
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": name, "password": STRONG, "cookie": True})
        assert r.status_code == 200
        set_cookie = r.headers.get_list("set-cookie")
        session = next(h for h in set_cookie if h.startswith("flowdeck_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session
        csrf = r.json()["csrf_token"]
        assert c.get(f"{API}/auth/me").status_code == 200  # cookie alone reads
        r = c.post(f"{API}/auth/tokens", json={"name": "from-browser"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        r = c.post(
            f"{API}/auth/tokens", json={"name": "from-browser"}, headers={"X-CSRF-Token": "wrong"}
        )
        assert r.status_code == 403
        r = c.post(
            f"{API}/auth/tokens", json={"name": "from-browser"}, headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 201
        assert c.post(f"{API}/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert c.get(f"{API}/auth/me").status_code == 401


def test_health_probes_and_headers(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/healthz")
        assert r.json()["status"] == "ok"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "strict-transport-security" not in r.headers  # plain HTTP: no HSTS
        assert c.get("/readyz").json() == {"status": "ready", "ready": True}
        assert c.get("/openapi.json").json()["info"]["title"] == "flowdeck"
        assert c.get("/docs").status_code == 200
