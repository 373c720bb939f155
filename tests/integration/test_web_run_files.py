"""The run page shows a file parameter by its name, size and download link, never by the
server's path (the API's status does the same: tests/integration/test_sdk.py)."""

from __future__ import annotations

from pathlib import Path

from flowdeck.client import Client
from tests.helpers import STRONG, LiveServer, register_and_login, unique

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_the_run_page_links_file_parameters(server: LiveServer, tmp_path: Path) -> None:
    name = unique("webfiles")
    token = register_and_login(server, name)
    text = tmp_path / "lines.txt"
    text.write_text("b\na\n")
    with Client(server.url, token) as fd:
        fd.push_workflow(EXAMPLES / "files" / "flowdeck.yaml")
        run = fd.create_run("sort-lines@1.0")
        run.upload("text", text)
        run.start()
        assert run.wait(timeout=60)["state"] == "succeeded"
    with server.client() as browser:
        body = {"username": name, "password": STRONG, "cookie": True}
        assert browser.post("/api/v1/auth/login", json=body).status_code == 200
        page = browser.get(f"/runs/{run.id}").text
        link = f'<a href="/api/v1/runs/{run.id}/files/text?filename=lines.txt" download>'
        assert f"{link}lines.txt</a> (4 bytes)" in page
        assert str(server.settings.data_dir.absolute()) not in page
        got = browser.get(f"/api/v1/runs/{run.id}/files/text", params={"filename": "lines.txt"})
        assert got.status_code == 200 and got.content == b"b\na\n"
        assert got.headers["content-disposition"].startswith("attachment")
        missing = browser.get(f"/api/v1/runs/{run.id}/files/text", params={"filename": "x.txt"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
