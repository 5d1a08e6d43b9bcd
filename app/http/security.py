"""The optional API key on /predict* and the Open Inference Protocol's /v2/models/…/infer:
`Authorization: Bearer <key>` or `X-API-Key: <key>`.

The upload guard middleware checks it before the body is read; `document_api_key` puts the
schemes into /docs.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers

UNAUTHORIZED_DETAIL = (
    "missing or wrong API key; send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
)

_bearer = HTTPBearer(auto_error=False, description="the API key, when one is configured")
_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="the API key, when one is configured"
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


API_KEY_SCHEMES = {"HTTPBearer": _bearer, "APIKeyHeader": _key_header}


def document_api_key(app: FastAPI) -> None:
    """Show the API key schemes in /openapi.json and /docs for the routes that need one.

    The check itself is UploadGuardMiddleware's, before the body is read. It used to be a
    router dependency as well, but FastAPI resolves `Security(...)` dependencies on every
    request, and with three of them that was over a tenth of a tiny prediction's CPU time.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            for name, scheme in API_KEY_SCHEMES.items():
                schemes[name] = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
            for path, operations in schema.get("paths", {}).items():
                if needs_api_key(path):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in API_KEY_SCHEMES]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
