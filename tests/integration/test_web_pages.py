"""The dashboard's pages over plain HTTP: sessions, redirects, escaping, privacy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.helpers import STRONG, LiveServer, register_and_login, unique

EVIL = (
    'name: evil\nversion: "1"\ndescription: "<script>alert(1)</script>"\n'
    "steps:\n  a:\n    run: [echo, hi]\n"
)


@contextmanager
def browser_session(server: LiveServer, name: str) -> Iterator[httpx.Client]:
    """A client holding a browser session: the cookies that signing in on the page sets."""
    register_and_login(server, name)
    with server.client() as client:
        body = {"username": name, "password": STRONG, "cookie": True}
        assert client.post("/api/v1/auth/login", json=body).status_code == 200
        yield client


def test_pages_need_a_session_and_send_back_after_sign_in(server: LiveServer) -> None:
    with server.client() as anon:
        for path in (
            "/",
            "/runs/new",
            "/workflows",
            "/secrets",
            "/admin",
            "/runs/run_x",
            "/runs/run_x/steps/a",
            "/workflows/a/b@1",
            "/tokens",
            "/events",
            "/admin/audit",
        ):
            r = anon.get(path, follow_redirects=False)
            assert r.status_code == 303
            assert r.headers["location"].startswith("/login?next=")
        page = anon.get("/login?next=//evil.example/")
        assert 'data-next="/"' in page.text  # no open redirect
        assert "Sign in" in anon.get("/login").text


def test_user_text_is_escaped_and_changes_need_csrf(server: LiveServer) -> None:
    with browser_session(server, unique("web")) as c:
        csrf = c.cookies["flowdeck_csrf"]
        no_csrf = c.post("/api/v1/workflows", content=EVIL, headers={"content-type": "text/yaml"})
        assert no_csrf.status_code == 403
        r = c.post(
            "/api/v1/workflows",
            content=EVIL,
            headers={"content-type": "text/yaml", "x-csrf-token": csrf},
        )
        assert r.status_code == 201, r.text
        page = c.get("/workflows").text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert c.get("/runs/new?workflow=%25%25").status_code == 404
        assert c.get("/admin").status_code == 404  # not an admin


def test_a_run_page_is_its_owners(server: LiveServer) -> None:
    with (
        browser_session(server, unique("own")) as owner,
        browser_session(server, unique("oth")) as other,
    ):
        csrf = {"x-csrf-token": owner.cookies["flowdeck_csrf"]}
        spec = 'name: tiny\nversion: "1"\nsteps:\n  a:\n    run: [echo, hi]\n'
        owner.post("/api/v1/workflows", content=spec, headers={"content-type": "text/yaml", **csrf})
        run = owner.post("/api/v1/runs", json={"workflow": "tiny@1"}, headers=csrf).json()
        page = owner.get(f"/runs/{run['id']}")
        assert page.status_code == 200 and 'data-step="a"' in page.text
        assert other.get(f"/runs/{run['id']}").status_code == 404
        assert run["id"] not in other.get("/").text
        assert "exempt from retention" not in page.text
        owner.put(f"/api/v1/runs/{run['id']}/keep", json={"keep": True}, headers=csrf)
        assert "kept (exempt from retention)" in owner.get(f"/runs/{run['id']}").text


def test_every_page_has_a_strict_content_security_policy(server: LiveServer) -> None:
    with browser_session(server, unique("csp")) as c:
        csrf = {"x-csrf-token": c.cookies["flowdeck_csrf"]}
        spec = 'name: cspy\nversion: "1"\nsteps:\n  a:\n    run: [echo, hi]\n'
        c.post("/api/v1/workflows", content=spec, headers={"content-type": "text/yaml", **csrf})
        run = c.post("/api/v1/runs", json={"workflow": "cspy@1"}, headers=csrf).json()
        graph = c.post("/api/v1/graphs", json={"name": "g"}, headers=csrf).json()
        pages = ["/", "/runs/new", "/workflows", "/graphs", "/webhooks", "/secrets", "/admin"]
        pages += [f"/runs/{run['id']}", f"/graphs/{graph['id']}", "/runs/run_nothing"]
        pages += ["/tokens", "/events", "/admin/audit", "/workflows/nobody/none@1"]
        pages += [f"/runs/{run['id']}/steps/a", "/?state=bogus&since=never"]
        for path in pages:
            r = c.get(path)
            assert r.headers["content-type"].startswith("text/html"), path
            policy = r.headers.get("content-security-policy", "")
            directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ") if d}
            assert directives.get("default-src") == ["'none'"], (path, policy)
            assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
            assert directives["frame-ancestors"] == ["'none'"]
            assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'self'"]
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    with server.client() as anon:
        for path in ("/login", "/register"):
            assert "script-src 'self'" in anon.get(path).headers["content-security-policy"]


def test_the_secrets_page_lists_names_never_values(server: LiveServer) -> None:
    with (
        browser_session(server, unique("sec")) as owner,
        browser_session(server, unique("oth")) as other,
    ):
        csrf = {"x-csrf-token": owner.cookies["flowdeck_csrf"]}
        value = unique("never-shown-")
        r = owner.put("/api/v1/secrets/grid_token", json={"value": value})
        assert r.status_code == 403  # a cookie session changes nothing without its CSRF token
        r = owner.put("/api/v1/secrets/grid_token", json={"value": value}, headers=csrf)
        assert r.status_code == 201
        page = owner.get("/secrets").text
        assert 'data-secret="grid_token"' in page and value not in page
        assert "grid_token" not in other.get("/secrets").text


def test_step_workflow_token_pages_are_their_owners_and_bad_filters_are_named(
    server: LiveServer,
) -> None:
    with (
        browser_session(server, unique("own")) as owner,
        browser_session(server, unique("oth")) as other,
    ):
        csrf = {"x-csrf-token": owner.cookies["flowdeck_csrf"]}
        name = unique("priv")
        spec = f'name: {name}\nversion: "1"\nsteps:\n  a:\n    run: [echo, hi]\n'
        made = owner.post(
            "/api/v1/workflows", content=spec, headers={"content-type": "text/yaml", **csrf}
        ).json()
        run = owner.post(
            "/api/v1/runs", json={"workflow": f"{name}@1", "start": True}, headers=csrf
        ).json()
        page = owner.get(f"/workflows/{made['ref']}")
        assert page.status_code == 200 and name in page.text
        assert other.get(f"/workflows/{made['ref']}").status_code == 404  # private
        assert other.get(f"/runs/{run['id']}/steps/a").status_code == 404
        assert other.get(f"/api/v1/runs/{run['id']}/steps/a/log.txt").status_code == 404
        assert owner.get(f"/runs/{run['id']}/steps/nothing").status_code == 404
        token = owner.post("/api/v1/auth/tokens", json={"name": "mine"}, headers=csrf).json()
        assert token["id"] in owner.get("/tokens").text
        assert token["id"] not in other.get("/tokens").text
        listed = owner.get("/?state=bogus&sort=size&since=never&cursor=x")
        assert listed.status_code == 200
        for problem in ("state: &#39;bogus&#39;", "sort: &#39;size&#39;", "since: &#39;never&#39;"):
            assert problem in listed.text, problem
        assert "cursor: &#39;x&#39; is not a run id" in listed.text
        # the API keeps its JSON 404; a browser asking for no page gets the page
        assert owner.get("/api/v1/nothing").headers["content-type"] == "application/json"
        html = owner.get("/nothing/here", headers={"accept": "text/html"})
        assert html.status_code == 404 and "Not found" in html.text
        assert owner.get("/nothing/here").headers["content-type"] == "application/json"
