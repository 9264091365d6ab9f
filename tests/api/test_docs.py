"""/docs and /redoc of the real `wcu-ai api` need no network: every script, style sheet and icon the
pages reference is served by the API itself; WCU_API_DOCS=false leaves them out."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import Proc, wait_http

Start = Callable[..., Proc]


class References(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes, and Swagger UI's `url:`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._script = tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", data)
            self.urls += re.findall(r"https?://[^\s'\"]+", data)


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize(("page", "marker"), [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")])
def test_the_docs_pages_load_everything_from_the_api(
    start: Start, service_env: dict[str, str], page: str, marker: str
) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    start("api")
    wait_http(f"{base}/health")
    response = httpx.get(f"{base}{page}", timeout=10)
    assert response.status_code == 200
    urls = references(response.text)
    assert len(urls) >= 3, urls  # a script, a style sheet or the schema, an icon
    foreign = [u for u in urls if urlsplit(u).scheme or u.startswith("//")]
    assert foreign == [], f"{page} loads from elsewhere: {foreign}"
    assert "/openapi.json" in urls
    scripts = []
    for url in urls:
        asset = httpx.get(urljoin(f"{base}{page}", url), timeout=10)
        assert asset.status_code == 200 and asset.content, url
        if url.endswith(".js"):
            scripts.append(asset.text)
    assert any(marker in script for script in scripts), f"no script of {page} defines {marker}"


def test_docs_can_be_turned_off(start: Start, service_env: dict[str, str]) -> None:
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    start("api", WCU_API_DOCS="false")
    wait_http(f"{base}/health")
    for path in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js", "/docs/oauth2-redirect"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 404, path
    assert httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "WeconnectU AI Server"
