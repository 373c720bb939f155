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


# -- nesting, resources, names, ranges: refused in the JSON error shape, never a 500 ---------

STREAMING = """name: nested
version: "1"
inputs:
  records: {type: stream}
  doc: {type: file, required: false}
steps:
  t:
    run: [cat]
    stdin: "${{ inputs.records }}"
"""
DEEP = 1000


@pytest.fixture(scope="module")
def staged(server: LiveServer, token: str) -> str:
    """A staged run of a workflow with a stream input (nothing runs)."""
    with server.client(token) as c:
        r = c.post(
            f"{API}/workflows", content=STREAMING, headers={"content-type": "application/yaml"}
        )
        assert r.status_code in (200, 201), r.text
        r = c.post(f"{API}/runs", json={"workflow": "nested@1"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def deep(levels: int, open_: str = "[", close: str = "]") -> str:
    return open_ * levels + close * levels


def test_a_deeply_nested_push_is_refused_naming_where(
    server: LiveServer, token: str, staged: str
) -> None:
    url = f"{API}/runs/{staged}/inputs/records"
    with server.client(token) as c:
        r = c.post(url, content=deep(DEEP), headers={"content-type": "application/json"})
        err = assert_json_error(r, 422)
        assert err["code"] == "json_too_deep" and "nested deeper than" in err["message"]
        details = err["details"]
        assert details["max_depth"] == 64 and details["field"] == "body"
        assert (details["line"], details["column"]) == (1, 65)
        ndjson = '{"n": 1}\n' + deep(DEEP, '{"a":', "}").replace('{"a":}', '{"a":1}') + "\n"
        r = c.post(url, content=ndjson, headers={"content-type": "application/x-ndjson"})
        err = assert_json_error(r, 422)
        assert err["code"] == "json_too_deep" and err["details"]["line"] == 2
        assert "line 2" in err["message"]
        ok = json.dumps([{"v": json.loads(deep(60))}])  # deep, within the limit
        r = c.post(url, content=ok, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/login"),
        ("PATCH", "/runs/{run}/params"),
        ("PUT", "/runs/{run}/resources"),
        ("POST", "/webhooks"),
        ("POST", "/graphs"),
    ],
)
def test_deeply_nested_bodies_are_refused_everywhere(
    server: LiveServer, token: str, staged: str, method: str, path: str
) -> None:
    body = '{"x": ' + deep(DEEP) + "}"
    with server.client(token) as c:
        r = c.request(
            method,
            API + path.format(run=staged),
            content=body,
            headers={"content-type": "application/json"},
        )
    err = assert_json_error(r, 422)
    assert err["code"] == "json_too_deep" and err["details"]["column"] == 70


def test_a_deeply_nested_websocket_message_is_answered_with_an_error(
    server: LiveServer, token: str, staged: str
) -> None:
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + f"{API}/runs/{staged}/inputs/records"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(deep(DEEP))
        err = json.loads(ws.recv(timeout=30))["error"]
        assert err["code"] == "json_too_deep" and err["details"]["max_depth"] == 64
        ws.send(json.dumps({"n": 1}))  # the socket stays open
        assert "records" in json.loads(ws.recv(timeout=30))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memory": -1}, "memory"),
        ({"memory": 0}, "memory"),
        ({"memory": "0MiB"}, "memory"),
        ({"walltime": 0}, "walltime"),
        ({"walltime": -5}, "walltime"),
        ({"walltime": "0s"}, "walltime"),
        ({"cpus": 0}, "cpus"),
    ],
)
def test_resources_must_be_positive(
    server: LiveServer, token: str, staged: str, body: dict[str, Any], field: str
) -> None:
    with server.client(token) as c:
        r = c.put(f"{API}/runs/{staged}/resources", json=body)
    err = assert_json_error(r, 422)
    assert field in err["message"], err


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"walltime": NaN}', "walltime"),
        ('{"walltime": Infinity}', "walltime"),
        ('{"walltime": -Infinity}', "walltime"),
        ('{"walltime": 1e999}', "walltime"),
        ('{"cpus": NaN}', "cpus"),
        ('{"cpus": Infinity}', "cpus"),
        ('{"memory": 1e999}', "memory"),
    ],
)
def test_resources_must_be_finite(
    server: LiveServer, token: str, staged: str, raw: str, field: str
) -> None:
    with server.client(token) as c:
        assert c.put(f"{API}/runs/{staged}/resources", json={}).status_code == 200
        r = c.put(
            f"{API}/runs/{staged}/resources",
            content=raw,
            headers={"content-type": "application/json"},
        )
        err = assert_json_error(r, 422)
        assert field in err["message"], err
        run = c.get(f"{API}/runs/{staged}").json()
    assert "walltime_s" not in run["resources"] and "memory_bytes" not in run["resources"]


UNSAFE = [
    "a\rb",
    "a\nb",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "c1\x85",
    "rlo\u202etxt.exe",
    "iso\u2066x",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_control_and_bidi_characters_are_refused_in_file_names(
    server: LiveServer, token: str, staged: str, name: str
) -> None:
    with server.client(token) as c:
        r = c.put(f"{API}/runs/{staged}/files/doc", params={"filename": name}, content=b"x")
        err = assert_json_error(r, 422)
        assert err["details"]["field"] == "filename" and "U+" in err["message"]
        assert c.get(f"{API}/runs/{staged}/files").json() == []


@pytest.mark.parametrize("tag", UNSAFE)
def test_control_and_bidi_characters_are_refused_in_tags_and_names(
    server: LiveServer, token: str, tag: str
) -> None:
    with server.client(token) as c:
        r = c.post(f"{API}/runs", json={"workflow": "nested@1", "tags": ["ok", tag]})
        err = assert_json_error(r, 422)
        assert err["details"]["field"] == "tags" and "U+" in err["message"]
        r = c.post(f"{API}/graphs", json={"name": tag})
        err = assert_json_error(r, 422)
        assert err["details"]["field"] == "name"
        r = c.post(f"{API}/graphs", json={"nodes": {"n": {"workflow": "nested@1", "tags": [tag]}}})
        err = assert_json_error(r, 422)
        assert err["details"]["field"] == "tags"


@pytest.mark.parametrize(
    "document",
    [
        deep(DEEP),  # JSON, as YAML's flow style
        "x: " + deep(DEEP, "{a: ", "}").replace("{a: }", "{a: 1}"),
        "a:\n" + "".join("  " * i + "-\n" for i in range(1, 300)),  # block style
    ],
)
@pytest.mark.parametrize("path", ["/workflows", "/workflows/validate"])
def test_deeply_nested_workflow_documents_are_refused(
    server: LiveServer, token: str, path: str, document: str
) -> None:
    with server.client(token) as c:
        r = c.post(API + path, content=document, headers={"content-type": "application/yaml"})
    if path == "/workflows":
        err = assert_json_error(r, 422)
        assert err["code"] in ("invalid_workflow", "json_too_deep"), err
        text = json.dumps(err)
    else:
        assert r.status_code == 200 and r.json()["valid"] is False, r.text
        text = r.text
    assert "nested deeper than 64 levels" in text


@pytest.mark.parametrize("field", ["workflow_params", "tags"])
def test_deeply_nested_wes_form_fields_are_refused(
    server: LiveServer, token: str, field: str
) -> None:
    form = {
        "workflow_url": "main.cwl",
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        field: deep(DEEP, '{"a": ', "}").replace('{"a": }', '{"a": 1}'),
    }
    with server.client(token) as c:
        r = c.post("/ga4gh/wes/v1/runs", files={k: (None, v) for k, v in form.items()})
    assert r.status_code == 400, r.text
    assert f"{field} is nested deeper than 64 levels" in r.json()["msg"]


RANGED = b"0123456789abcdefghij"  # 20 bytes


@pytest.mark.parametrize(
    ("value", "status", "body"),
    [
        ("bytes=0-4", 206, RANGED[0:5]),
        ("bytes=-5", 206, RANGED[-5:]),
        ("bytes=17-", 206, RANGED[17:]),
        ("bytes=2-100", 206, RANGED[2:]),
        ("bytes=0-2, 25-", 206, RANGED[0:3]),
        ("bytes=5-1", 200, RANGED),
        ("bytes=abc", 200, RANGED),
        ("bytes=", 200, RANGED),
        ("bytes=1-2,5-1", 200, RANGED),
        ("bytes=--1", 200, RANGED),
        ("items=0-5", 200, RANGED),
        ("bytes=20-", 416, None),
        ("bytes=30-40", 416, None),
        ("bytes=-0", 416, None),
    ],
)
def test_ranges_of_a_staged_file_follow_rfc_9110(
    server: LiveServer, token: str, staged: str, value: str, status: int, body: bytes | None
) -> None:
    url = f"{API}/runs/{staged}/files/doc"
    with server.client(token) as c:
        r = c.put(url, params={"filename": "ranged.txt"}, content=RANGED)
        assert r.status_code == 201, r.text
        r = c.get(url, params={"filename": "ranged.txt"}, headers={"Range": value})
    assert r.status_code == status, (r.status_code, r.text[:200])
    if body is not None:
        assert r.content == body
    else:
        assert r.headers["content-range"] == "bytes */20"
        err = assert_json_error(r, 416)
        assert err["code"] == "range_not_satisfiable" and err["details"] == {"size": 20}
