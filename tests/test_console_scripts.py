"""The console's pages and the scripts they load, in-process (no browser): each page
loads the shared console.js and its own page script, deferred, from this server only,
and every script it names is actually served as JavaScript."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

import pixguard.serve.console
from pixguard import Classifier
from pixguard.serve import ServeSettings, create_app

CONSOLE_STATIC = Path(pixguard.serve.console.__file__).parent / "static"
SHARED = "/static/console/console.js"
#: Each console page and the page script it adds after the shared one.
PAGE_SCRIPTS = {
    "/login": [],
    "/moderate": ["/static/console/moderate.js"],
    "/review": ["/static/console/review.js"],
    "/escalations": ["/static/console/review.js"],
    "/generate": ["/static/console/generate.js"],
    "/decisions": [],
    "/stats": [],
}
JAVASCRIPT_TYPES = ("text/javascript", "application/javascript")


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))


def _scripts_of(html: str) -> list[dict[str, str | None]]:
    parser = _Scripts()
    parser.feed(html)
    parser.close()
    return parser.scripts


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_vit_folder):
    from pixguard.testing import tiny_sd3_pipeline

    work = tmp_path_factory.mktemp("console-scripts")
    # With a generator configured, so that /generate renders its page, not an error.
    settings = ServeSettings(
        data_dir=work / "data", generate_variant=str(tiny_sd3_pipeline(work / "sd3"))
    )
    app = create_app(
        settings,
        classifier_factory=lambda s: Classifier.load(tiny_vit_folder, runtime="torch"),
    )
    with TestClient(app) as client:
        yield client


def _assert_served_same_origin_javascript(client: TestClient, script: dict) -> None:
    src = script.get("src")
    # An inline script would be refused by the CSP (default-src 'self').
    assert src, f"inline script: {script}"
    parts = urlsplit(src)
    assert not parts.scheme and not parts.netloc and src.startswith("/"), src
    served = client.get(src)
    assert served.status_code == 200, src
    assert served.headers["content-type"].startswith(JAVASCRIPT_TYPES), (src, served.headers)


@pytest.mark.parametrize(("path", "own"), PAGE_SCRIPTS.items())
def test_each_console_page_loads_the_shared_script_and_its_own(client, path, own):
    page = client.get(path)
    assert page.status_code == 200, path
    scripts = _scripts_of(page.text)
    assert [script.get("src") for script in scripts] == [SHARED, *own]
    for script in scripts:
        # Deferred, so the page script runs after the shared one it uses.
        assert "defer" in script, script
        _assert_served_same_origin_javascript(client, script)


def test_the_docs_page_loads_only_served_same_origin_scripts(client):
    page = client.get("/docs")
    assert page.status_code == 200
    scripts = _scripts_of(page.text)
    assert scripts
    for script in scripts:
        _assert_served_same_origin_javascript(client, script)


def test_every_console_script_is_loaded_by_some_page(client):
    loaded = {
        script.get("src")
        for path in [*PAGE_SCRIPTS, "/docs"]
        for script in _scripts_of(client.get(path).text)
    }
    shipped = {f"/static/console/{file.name}" for file in CONSOLE_STATIC.glob("*.js")}
    assert shipped <= loaded, shipped - loaded


def test_a_script_the_server_does_not_ship_is_404(client):
    # The check above is only worth something if a missing file is not a 200.
    assert client.get("/static/console/absent.js").status_code == 404
