"""The optional API key on /predict* and the Open Inference Protocol's /v2/models/…/infer:
`Authorization: Bearer <key>` or `X-API-Key: <key>`.

The upload guard middleware checks it before the body is read; app/http/openapi.py declares
these schemes in /openapi.json, on the routes `needs_api_key` names, while a key is set.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.datastructures import Headers

UNAUTHORIZED_DETAIL = (
    "missing or wrong API key; send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
)


def needs_api_key(path: str) -> bool:
    """The routes a configured key guards: those that run the model. Metadata and health
    routes stay open."""
    return path.startswith("/predict") or (
        path.startswith("/v2/models/") and path.endswith("/infer")
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


# Either one will do (OpenAPI security schemes, by name).
API_KEY_SCHEMES: dict[str, dict[str, Any]] = {
    "HTTPBearer": {"type": "http", "scheme": "bearer",
                   "description": "`Authorization: Bearer <key>`"},
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "`X-API-Key: <key>`"},
}
