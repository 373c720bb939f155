"""No request built from bad input yields a 500: every error is a 4xx with a JSON body."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import LiveServer, register_and_login, unique

API = "/api/v1"


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return register_and_login(server, unique("fuzz"))


def assert_json_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"code", "message", "details"}
    return err


def test_malformed_json(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(
            f"{API}/auth/login",
            content=b'{"username": "a",',
            headers={"content-type": "application/json"},
        )
    err = assert_json_error(r, 422)
    assert err["code"] == "invalid_request" and "JSON" in err["message"]


def test_wrong_types_name_the_field(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(f"{API}/auth/login", json={"username": ["x"], "password": 5})
    err = assert_json_error(r, 422)
    assert {e["loc"] for e in err["details"]["errors"]} == {"body.username", "body.password"}


def test_unknown_fields_are_refused(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(
            f"{API}/auth/register",
            json={"username": "newbie", "password": "x" * 20, "role": "admin"},
        )
    err = assert_json_error(r, 422)
    assert "body.role" in err["message"]


def raw_post(server: LiveServer, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a hand-made request over a socket; the server answers before reading a body
    it refuses, which an ordinary client would see as a reset while still sending."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_part, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(payload)


def test_huge_bodies_get_413_announced_or_streamed(server: LiveServer) -> None:
    limit = server.settings.max_request_bytes
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\n"
    )
    status, body = raw_post(server, head + b"Content-Length: %d\r\n" % (limit + 1))
    assert status == 413 and body["error"]["code"] == "payload_too_large"

    piece = 64 * 1024
    chunks = b"".join(b"%x\r\n%s\r\n" % (piece, b" " * piece) for _ in range(limit // piece))
    chunks += b"1\r\n \r\n0\r\n\r\n"  # one byte over the limit, without Content-Length
    status, body = raw_post(server, head + b"Transfer-Encoding: chunked\r\n", chunks)
    assert status == 413 and str(limit) in body["error"]["message"]


def test_unknown_route_and_method(server: LiveServer) -> None:
    with server.client() as c:
        assert_json_error(c.get(f"{API}/nothing-here"), 404)
        assert_json_error(c.delete("/healthz"), 405)


def test_query_parameter_types(server: LiveServer, token: str) -> None:
    with server.client(token) as c:  # admin routes check the role before the query
        assert c.get(f"{API}/admin/audit", params={"limit": "many"}).status_code in (403, 422)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "username": JSON,
            "password": JSON,
            "cookie": JSON,
            "name": JSON,
            "expires_in_days": JSON,
            "current_password": JSON,
            "new_password": JSON,
            "end_other_sessions": JSON,
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
ROUTES = ["/auth/register", "/auth/login", "/auth/password", "/auth/tokens", "/auth/logout"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), body=BODIES, auth=st.booleans())
def test_random_bodies_never_cause_a_server_error(
    server: LiveServer, token: str, route: str, body: bytes, auth: bool
) -> None:
    with server.client(token if auth and route != "/auth/logout" else None) as c:
        r = c.post(API + route, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert "error" in r.json()
