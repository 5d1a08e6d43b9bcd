"""DirectRoute: endpoints called without FastAPI's per-request handler, still documented and
still answered through the app's exception handlers."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from app.http.routes.direct import DirectRoute


class Refused(Exception):
    pass


def make_app() -> FastAPI:
    router = APIRouter(route_class=DirectRoute)

    @router.post("/echo", summary="Echo the body", openapi_extra={"parameters": [
        {"name": "n", "in": "query", "required": False, "schema": {"type": "integer"}}]})
    async def echo(request: Request) -> Response:
        body = await request.body()
        if body == b"refuse":
            raise Refused
        return Response(body[::-1], media_type="text/plain")

    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": "refused"}, status_code=409)

    return app


def test_the_endpoint_gets_the_request_and_its_response_is_sent() -> None:
    with TestClient(make_app()) as client:
        response = client.post("/echo?n=1", content=b"abc")
    assert (response.status_code, response.text) == (200, "cba")


def test_exceptions_still_reach_the_apps_handlers() -> None:
    with TestClient(make_app()) as client:
        response = client.post("/echo", content=b"refuse")
    assert (response.status_code, response.json()) == (409, {"detail": "refused"})


def test_the_route_is_documented_from_its_decorator() -> None:
    operation = make_app().openapi()["paths"]["/echo"]["post"]
    assert operation["summary"] == "Echo the body"
    assert operation["parameters"][0]["name"] == "n"


def test_an_endpoint_with_parameters_is_refused_when_the_route_is_made() -> None:
    """FastAPI would never fill them in: fail at import, not with a TypeError per request."""
    router = APIRouter(route_class=DirectRoute)
    with pytest.raises(TypeError, match="must be `async def endpoint\\(request: Request\\)"):
        @router.get("/x")
        async def x(request: Request, n: int = Query(1)) -> Response:  # noqa: B008
            return Response()
    with pytest.raises(TypeError, match="DirectRoute endpoint"):
        @router.get("/y")
        def y(request: Request) -> Response:
            return Response()
