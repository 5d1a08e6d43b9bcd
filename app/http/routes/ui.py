"""GET /: one self-contained HTML page to try the model in a browser (CNN_SERVE_UI).

The page (app/http/static/index.html) holds its CSS and script inline and talks to /predict,
/predict/batch and /model from the browser; the server keeps nothing. It is public: the API key,
when one is set, guards the predictions, and the page asks for it after a 401.

Its Content-Security-Policy allows exactly the page's one <style> and one <script> block, by
their sha256 (computed here from the file, so editing the page cannot break the policy), no
other origin, and no innerHTML-style sinks (Trusted Types). The header is sent on this route only:
/docs loads Swagger UI from a CDN. The page is the same bytes until the next deploy, so it is
served with an ETag and `Cache-Control: no-cache`: browsers revalidate on every load (a 304 of a
few hundred bytes) and so never pair an old page with a newer API after an upgrade.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from app.http.dependencies import settings_of

router = APIRouter(tags=["ui"])

PAGE = "static/index.html"


@dataclass(frozen=True)
class Page:
    body: bytes
    etag: str
    headers: dict[str, str]


def _sha256_source(html: str, tag: str) -> str:
    """The CSP source for the page's one inline `<tag>` block (an attribute-free tag)."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    if len(blocks) != 1:
        raise ValueError(f"{PAGE} must hold exactly one <{tag}> block, found {len(blocks)}")
    digest = hashlib.sha256(blocks[0].encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def content_security_policy(html: str) -> str:
    directives = {
        "default-src": "'none'",
        "script-src": _sha256_source(html, "script"),
        "style-src": _sha256_source(html, "style"),
        "img-src": "'self' blob: data:",  # thumbnails are object URLs; the favicon is data:
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
        "require-trusted-types-for": "'script'",
        "trusted-types": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@functools.cache
def load_page() -> Page:
    """The page and its headers, read from the package on the first request (20 kB)."""
    body = resources.files("app.http").joinpath(PAGE).read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {
        "Content-Security-Policy": content_security_policy(body.decode()),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "ETag": etag,
    }
    return Page(body, etag, headers)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.get("/", include_in_schema=False)
async def ui(request: Request) -> Response:
    if not settings_of(request).ui:
        raise HTTPException(status_code=404)  # the same answer as with no route at all
    page = load_page()
    if _matches(request.headers.get("if-none-match", ""), page.etag):
        return Response(status_code=304, headers=page.headers)
    return Response(page.body, media_type="text/html; charset=utf-8", headers=page.headers)
