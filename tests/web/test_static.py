"""The web UI's static files, served by the API: no browser, no model (the lifespan never runs)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings
from service.web import INDEX_HTML, STATIC_DIR, WEB_DIR

URL_RE = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"')]*""")
IMPORT_RE = re.compile(r"""\b(?:from|import)\s*["'](\./[\w.-]+\.js)["']""")
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}


class _Page(HTMLParser):
    """The URLs a page loads and its form controls with their labels."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self._label_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append((tag, a[key] or ""))
        if tag == "label":
            self._label_depth += 1
            if a.get("for"):
                self.label_for.add(a["for"] or "")
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({**a, "_in_label": "1" if self._label_depth else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # No `with`: the lifespan (engine, queue) is not needed to serve files or /healthz.
    model_dir = tmp_path_factory.mktemp("no-model")
    return TestClient(create_app(Settings(queue_url="memory://", model_dir=model_dir)))


@pytest.fixture(scope="module")
def page() -> _Page:
    parser = _Page()
    parser.feed(INDEX_HTML.read_text(encoding="utf-8"))
    return parser


def _local_assets(page: _Page) -> list[str]:
    return [url for tag, url in page.urls if tag in ("script", "link")]


def test_root_serves_the_page(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == INDEX_HTML.read_text(encoding="utf-8")
    assert '<script type="module" src="static/app.js">' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["cache-control"] == "no-cache"
    assert client.head("/").status_code == 200


def test_assets_have_their_content_types(client, page):
    assets = _local_assets(page)
    assert {"static/app.js", "static/style.css", "static/favicon.svg"} <= set(assets)
    served = set()
    for url in assets:
        r = client.get("/" + url)
        assert r.status_code == 200, url
        expected = CONTENT_TYPES[Path(url).suffix]
        assert r.headers["content-type"].startswith(expected), (url, r.headers["content-type"])
        assert r.headers["x-content-type-options"] == "nosniff"
        served.add(url)
    # Every module that app.js imports (transitively) is served as JavaScript too.
    todo = ["static/app.js"]
    while todo:
        url = todo.pop()
        r = client.get("/" + url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].startswith("text/javascript"), url
        for name in IMPORT_RE.findall(r.text):
            dep = "static/" + name[2:]
            if dep not in served:
                served.add(dep)
                todo.append(dep)
    assert "static/api.js" in served and "static/color.js" in served


def test_page_loads_nothing_from_elsewhere(page):
    for tag, url in page.urls:
        assert not re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url, re.I), (tag, url)
    allowed = {"http://www.w3.org/2000/svg"}  # the SVG namespace: an identifier, not a request
    for path in [INDEX_HTML, *STATIC_DIR.rglob("*")]:
        if path.suffix in (".html", ".js", ".css", ".svg"):
            found = set(URL_RE.findall(path.read_text(encoding="utf-8")))
            assert found <= allowed, (path.relative_to(WEB_DIR), found - allowed)


def test_every_control_has_a_label(page):
    for control in page.controls:
        labelled = (
            control.get("aria-label")
            or control.get("aria-labelledby")
            or control.get("_in_label")
            or control.get("id") in page.label_for
        )
        assert labelled, f"unlabelled control: {control}"


def test_api_routes_still_win(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/colorize" in paths and "/anchors" in paths
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/static/no-such-file.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/static/../__init__.py").status_code == 404
    assert client.post("/").status_code == 405
    # A POST to the API still reaches the API (without the lifespan it has no queue: 503).
    r = client.post("/colorize", content=b"<html>", headers={"content-type": "text/html"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "not_ready"
