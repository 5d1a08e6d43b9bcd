"""The OpenAPI document (/openapi.json, /docs): what FastAPI infers from the routes and their
`responses=` (app/http/responses.py), completed with what it cannot know.

Once, when first asked:
- every response's X-Request-ID header (RequestContextMiddleware sets it on all of them);
- no `HTTPValidationError` 422, which FastAPI lists on any route with parameters: here those
  are plain path strings that no request gets wrong, and every 422 this app sends is an
  ErrorBody (app/http/errors.py).

On every request, from the running service, so that a reload or the settings never leave it
stale:
- the API key's security requirements and 401s, only while CNN_SERVE_API_KEY is set and only
  on the routes that run the model (`needs_api_key`); without a key a client following the
  document would expect a 401 it never gets;
- `top_k`'s maximum, the served model's number of classes, and the most files a batch takes
  (CNN_SERVE_MAX_BATCH_FILES);
- the served model's name and version as examples of the /v2 path parameters.

The key itself is checked by UploadGuardMiddleware, not by FastAPI `Security(...)`
dependencies: those are resolved on every request, and three of them cost over a tenth of a
tiny prediction's CPU time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI

from app.http.security import API_KEY_SCHEMES, needs_api_key
from app.http.v2 import model as v2_model
from app.inference.predictor import Predictor
from app.settings import Settings

REQUEST_ID = {"X-Request-ID": {
    "description": "the request's id: the client's own X-Request-ID when it sent a usable one "
                   "(1-128 of A-Z a-z 0-9 ._:@/+=-), else a new one; the log lines of the "
                   "request carry it",
    "required": True, "schema": {"type": "string"},
}}
FASTAPI_VALIDATION_ERROR = {"$ref": "#/components/schemas/HTTPValidationError"}

Document = dict[str, Any]


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (and so in /docs)."""
    build = app.openapi
    last: list[Any] = [None, None]  # (the settings and predictor it was made for, document)

    def openapi() -> Document:
        if app.openapi_schema is None:
            complete(build())  # FastAPI's, cached in app.openapi_schema: completed in place
        service = getattr(app.state, "service", None)
        made_for = (app.openapi_schema, app.state.settings,
                    None if service is None else service.predictor)
        # A reload swaps the predictor, so the copy is remade only when one of them changes.
        if last[0] is None or any(a is not b for a, b in zip(last[0], made_for, strict=True)):
            last[:] = [made_for, for_service(*made_for)]
        return last[1]

    app.openapi = openapi  # type: ignore[method-assign]


def operations(document: Document) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, operation) for every operation in the document."""
    for path, item in document.get("paths", {}).items():
        for operation in item.values():  # FastAPI's path items hold operations only
            yield path, operation


def complete(document: Document) -> None:
    """What holds for every response whatever the settings (see the module's docstring)."""
    for _, operation in operations(document):
        responses = operation["responses"]
        validation = responses.get("422", {}).get("content", {}).get("application/json", {})
        if validation.get("schema") == FASTAPI_VALIDATION_ERROR:
            del responses["422"]
        for response in responses.values():
            response.setdefault("headers", {}).update(REQUEST_ID)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def for_service(document: Document, settings: Settings | None,
                predictor: Predictor | None) -> Document:
    """A copy of `document` that says what the service running with `settings` and
    `predictor` does (None for either: not started, and nothing is said of it)."""
    document = copy.deepcopy(document)
    keyed = settings is not None and settings.api_key is not None
    if keyed:
        document.setdefault("components", {})["securitySchemes"] = copy.deepcopy(
            API_KEY_SCHEMES
        )
    for path, operation in operations(document):
        if not keyed:
            operation["responses"].pop("401", None)
        elif needs_api_key(path):
            operation["security"] = [{name: []} for name in API_KEY_SCHEMES]
        if predictor is not None:
            _describe_model(operation, predictor)
        if settings is not None:
            _limit_batch(operation, settings)
    return document


def _describe_model(operation: dict[str, Any], predictor: Predictor) -> None:
    for parameter in operation.get("parameters", ()):
        where, name = parameter["in"], parameter["name"]
        if (where, name) == ("query", "top_k"):
            parameter["schema"]["maximum"] = len(predictor.classes)
        elif (where, name) == ("path", "name"):
            parameter["example"] = predictor.name
        elif (where, name) == ("path", "version"):
            parameter["example"] = v2_model.version_of(predictor)


def _limit_batch(operation: dict[str, Any], settings: Settings) -> None:
    content = operation.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data", {}).get("schema", {})
    for field in form.get("properties", {}).values():
        if field.get("type") == "array":  # the repeated file field of /predict/batch
            field["maxItems"] = settings.max_batch_files
