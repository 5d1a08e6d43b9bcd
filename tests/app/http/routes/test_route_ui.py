"""GET /: the browser page, its headers and its setting, without a browser
(tests/app/browser/test_ui_browser.py drives it in Chromium)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.http.routes.ui import PAGE
from app.settings import load_settings, unknown_variables

REPO = Path(__file__).resolve().parents[4]
STATIC_PAGE = REPO / "app" / "http" / PAGE


def _policy(response: object) -> dict[str, str]:
    header = response.headers["content-security-policy"]  # type: ignore[attr-defined]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def _sha256(block: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"


def test_root_serves_the_page_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == STATIC_PAGE.read_bytes()
    html = response.text
    [script] = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    [style] = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert _policy(response) == {
        "default-src": "'none'",
        "script-src": _sha256(script),
        "style-src": _sha256(style),
        "img-src": "'self' blob: data:",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
        "require-trusted-types-for": "'script'",
        "trusted-types": "'none'",
    }
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"


def test_page_is_self_contained() -> None:
    html = STATIC_PAGE.read_text()
    assert '<meta name="viewport"' in html
    assert re.search(r"\b(src|href)=\"(?!data:)", html) is None  # no file or CDN to fetch
    assert "http://" not in html and "https://" not in html
    assert re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", html) is None
    assert re.search(r"\sstyle=|\son[a-z]+=", html) is None  # inline attributes: CSP blocks them


@pytest.mark.parametrize(
    "if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"],
)
def test_page_revalidates_with_its_etag(client: TestClient, if_none_match: str) -> None:
    etag = client.get("/").headers["etag"]
    response = client.get("/", headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "no-cache"


def test_a_stale_etag_gets_the_page(client: TestClient) -> None:
    response = client.get("/", headers={"If-None-Match": '"an-older-page"'})
    assert response.status_code == 200 and response.content == STATIC_PAGE.read_bytes()


def test_root_is_404_when_the_ui_is_off(make_client: Callable[..., TestClient]) -> None:
    response = make_client(ui=False).get("/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert "content-security-policy" not in response.headers


def test_page_needs_no_api_key_while_predictions_do(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_key="s3cret-key-123")
    page = client.get("/")
    assert page.status_code == 200
    assert b"s3cret-key-123" not in page.content
    assert client.post("/predict").status_code == 401


@pytest.mark.parametrize("path", ["/docs", "/model", "/healthz", "/openapi.json"])
def test_policy_is_only_on_the_page(client: TestClient, path: str) -> None:
    # Swagger UI at /docs loads its script and CSS from a CDN.
    response = client.get(path)
    assert response.status_code == 200
    assert "content-security-policy" not in response.headers


def test_page_is_not_in_the_api_schema(client: TestClient) -> None:
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_ui_setting_reads_cnn_serve_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().ui is True
    monkeypatch.setenv("CNN_SERVE_UI", "false")
    assert load_settings().ui is False
    assert unknown_variables() == []


def test_page_ships_in_the_wheel() -> None:
    # The Dockerfile installs a wheel: the page is package data of app.http.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"].get("app.http", [])
    assert any(fnmatch(PAGE, pattern) for pattern in patterns)
