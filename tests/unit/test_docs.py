"""The user documentation keeps up with the code."""

from __future__ import annotations

from pathlib import Path

from flowdeck.api import create_app
from flowdeck.config import Settings, env_var, load_settings, option_name
from flowdeck.services.context import make_context
from flowdeck.store.fake import FakeStore

DOCS = Path(__file__).parents[2] / "docs"


def test_configuration_page_lists_every_setting() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if env_var(name) not in text or option_name(name) not in text
    ]
    assert missing == []


def test_api_page_lists_every_route() -> None:
    cfg = load_settings(None, data_dir=Path("unused"))
    store = FakeStore()
    app = create_app(cfg, make_context(cfg, store), run_scheduler=False)
    text = (DOCS / "api.md").read_text()
    missing = []
    for path in app.openapi()["paths"]:
        short = path.removeprefix("/api/v1").replace("{action}", "")
        if short.rstrip("/") not in text:
            missing.append(path)
    assert missing == []


def test_web_page_lists_every_page() -> None:
    from fastapi.routing import APIRoute

    from flowdeck.web.pages import router
    from flowdeck.web.pages_areas import router as areas

    text = (DOCS / "web.md").read_text()
    missing = [
        route.path
        for route in [*router.routes, *areas.routes]
        if isinstance(route, APIRoute) and f"GET {route.path}`" not in text
    ]
    assert missing == []


def test_readme_shows_screenshots_that_exist() -> None:
    import re

    readme = (DOCS.parent / "README.md").read_text()
    images = re.findall(r"\(docs/images/([\w.-]+\.png)\)", readme)
    assert images
    assert [i for i in images if not (DOCS / "images" / i).is_file()] == []
