"""The optional API key on /predict*: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

The upload guard middleware checks it before the body is read; the router dependency checks it
again (cheap) and is what puts the security schemes into /docs.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers

from app.settings import Settings, get_settings

UNAUTHORIZED_DETAIL = (
    "missing or wrong API key; send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
)

_bearer = HTTPBearer(auto_error=False, description="the API key, when one is configured")
_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the API key, when one is configured"
)


def api_key_matches(headers: Headers, expected: str) -> bool:
    """Constant-time comparison against either header."""
    if not expected:
        return False
    scheme, _, token = headers.get("authorization", "").partition(" ")
    candidates = [headers.get("x-api-key", "")]
    if scheme.lower() == "bearer":
        candidates.append(token.strip())
    # Compare both candidates, always, so timing does not tell which header was tried.
    results = [hmac.compare_digest(c.encode(), expected.encode()) for c in candidates]
    return any(results)


async def require_api_key(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    _bearer_token: Annotated[object, Security(_bearer)] = None,
    _header_key: Annotated[object, Security(_key_header)] = None,
) -> None:
    if settings.api_key is None:
        return
    if not api_key_matches(request.headers, settings.api_key.get_secret_value()):
        raise HTTPException(401, UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})
