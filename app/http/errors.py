"""Every failure becomes JSON `{"detail": "..."}` with the right status.

Client mistakes (4xx) say what was wrong and what is accepted. Overload is 503 with
Retry-After, a timeout is 504, a body that arrives too slowly 408. A client that hangs up is
logged and counted as 499. A 5xx that is our bug is logged with the request id, which the
response carries too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.http.disconnect import ClientDisconnectedError
from app.http.multipart import MultipartError
from app.inference.batching import BatchFailedError, QueueFullError, WorkerUnavailableError
from app.inference.service import InferenceTimeoutError
from app.settings import NotStartedError
from models.images import (
    ACCEPTED,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

logger = logging.getLogger(__name__)

IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    EmptyImageError: 400,
    CorruptImageError: 400,
    UnsupportedImageError: 415,
    ImageTooLargeError: 413,
}


class PayloadTooLargeError(HTTPException):
    """Raised while the body streams in, as soon as it passes the limit."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


class BodyTimeoutError(HTTPException):
    """The request body did not arrive within the body timeout; the connection is closed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body did not arrive within {timeout_s:g} s; the server "
                   "closes connections whose uploads stall or trickle, send it again",
            headers={"Connection": "close"},
        )


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _error(status: int, detail: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


async def _image_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((s for cls, s in IMAGE_ERROR_STATUS.items() if isinstance(exc, cls)), 400)
    return _error(status, str(exc))


def _retry_after(request: Request) -> dict[str, str]:
    settings = request.app.state.settings
    return {"Retry-After": str(settings.retry_after_s if settings else 1)}


def queue_full_response(exc: QueueFullError, retry_after_s: int) -> JSONResponse:
    """503 with Retry-After: also sent by the upload guard, before the body is read."""
    return _error(503, f"{exc}; retry in {retry_after_s} s",
                  {"Retry-After": str(retry_after_s)})


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    settings = request.app.state.settings
    return queue_full_response(exc, settings.retry_after_s if settings else 1)


async def _worker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, f"cannot predict now: {exc}", _retry_after(request))


async def _malformed_multipart(request: Request, exc: Exception) -> JSONResponse:
    return _error(400, f"the body is not valid multipart/form-data ({exc}); send the image as "
                       f"multipart/form-data (curl -F file=@image.png), {ACCEPTED}")


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    return _error(504, f"{exc}; the server is busy, retry later or send a smaller image")


async def _batch_failed(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    logger.error("request failed: %s", exc, extra={"request_id": rid})
    return _error(
        500, f"{exc}; this is a server bug, quote request id {rid}", request_id=rid
    )


async def _disconnected(request: Request, exc: Exception) -> Response:
    # Nobody reads this; 499 (nginx's "client closed request") is for the log and metrics.
    return Response(status_code=499)


def _describe(err: dict[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    where, name = (loc[0], ".".join(loc[1:])) if loc else ("", "")
    if where == "body":
        if err.get("type") == "missing":
            return (f"missing multipart field '{name}'; send the image as multipart/form-data "
                    f"(curl -F {name}=@image.png), {ACCEPTED}")
        return f"multipart field '{name}': {err.get('msg')}"
    if where == "query":
        got = f" (got {err['input']!r})" if "input" in err else ""
        return f"query parameter '{name}': {err.get('msg')}{got}"
    return f"{'.'.join(loc) or 'request'}: {err.get('msg')}"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in exc.errors()]
    detail = "; ".join(_describe(e) for e in exc.errors())
    return _error(422, detail, errors=jsonable_encoder(errors))


Handler = Callable[[Request, Exception], Awaitable[Response]]

HANDLERS: dict[type[Exception], Handler] = {
    ImageError: _image_error,
    QueueFullError: _queue_full,
    WorkerUnavailableError: _worker_unavailable,
    NotStartedError: _worker_unavailable,
    InferenceTimeoutError: _timeout,
    BatchFailedError: _batch_failed,
    ClientDisconnectedError: _disconnected,
    ClientDisconnect: _disconnected,  # Starlette's, while the body is being read
    MultipartError: _malformed_multipart,
    RequestValidationError: _validation,
}


def install_error_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
