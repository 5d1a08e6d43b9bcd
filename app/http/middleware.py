"""Pure ASGI middleware: request context (id, access log, metrics, last-resort 500) and the
upload guard (API key, byte limits and the body timeout, checked before and while the body
streams in)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import BodyTimeoutError, PayloadTooLargeError, queue_full_response
from app.http.security import UNAUTHORIZED_DETAIL, api_key_matches, needs_api_key
from app.http.v2.errors import is_v2
from app.inference.batching import QueueFullError
from app.observability import Metrics

access_log = logging.getLogger("app.access")
logger = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Room for the multipart boundary and part headers around one image of the byte limit.
MULTIPART_SLACK = 16 * 1024


def _request_id(scope: Scope) -> str:
    given = Headers(scope=scope).get("x-request-id", "")
    return given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    """The matched route's path template (a bounded label set for metrics), also for
    requests the upload guard answered before routing."""
    route = scope.get("route")
    if route is None and "app" in scope:
        app = scope["app"]
        # Ours first: an included router's wrapper matches in full but names no path.
        for candidate in (*getattr(app.state, "api_routes", ()), *app.routes):
            match, child_scope = candidate.matches(scope)
            if match is Match.FULL:
                route = child_scope.get("route", candidate)
                break
    return getattr(route, "path", None) or "unmatched"


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class RequestContextMiddleware:
    """X-Request-ID on every response, one JSON access-log line, request metrics, and a JSON
    500 (logged with the id) for any exception nothing else handled."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": rid})
            if status:
                raise  # the response has begun; the server closes the connection
            response = JSONResponse(
                {"detail": f"internal server error; quote request id {rid}", "request_id": rid},
                status_code=500,
            )
            await response(scope, receive, send_with_id)
        finally:
            route = _route_template(scope)
            seconds = time.perf_counter() - started_at
            code = str(status or 500)
            self.metrics.observe_request(route, scope["method"], code, seconds)
            access_log.info(
                "%s %s %s", scope["method"], scope["path"], code,
                extra={"request_id": rid, "method": scope["method"], "route": route,
                       "status": int(code), "latency_ms": round(seconds * 1000, 3)},
            )


class UploadGuardMiddleware:
    """Refuses what must never reach the body parser:
    - an unauthenticated request to a route that runs the model (401; see
      app.http.security.needs_api_key);
    - a prediction while the inference queue is full (503 with Retry-After). Under overload,
      reading and parsing uploads only to refuse them was most of the event loop's work,
      and it delayed everything else, /healthz included;
    - a body over its byte limit (413, from Content-Length up front or by counting bytes as
      they arrive; the rest of the body is never read);
    - a body that has not all arrived `body_timeout_s` after the request started (408, and
      the connection is closed: a client trickling its upload holds neither a connection nor
      a half-read body longer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = getattr(scope.get("app").state, "settings", None) if "app" in scope else None
        if scope["type"] != "http" or settings is None:
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        headers = Headers(scope=scope)
        predicts = needs_api_key(path)
        if settings.api_key is not None and predicts and not api_key_matches(
            headers, settings.api_key.get_secret_value()
        ):
            response = JSONResponse(
                {"detail": UNAUTHORIZED_DETAIL}, 401, {"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        service = getattr(scope["app"].state, "service", None)
        if (service is not None and predicts
                and service.batcher.admitted >= service.batcher.capacity):
            # The body is left unread: uvicorn discards it and keeps the connection.
            full = queue_full_response(QueueFullError(service.batcher.capacity),
                                       settings.retry_after_s)
            await full(scope, receive, send)
            return

        if path == "/predict/batch":
            limit = settings.max_batch_bytes
            detail = (f"the request is larger than the {limit:,}-byte limit for a whole "
                      "/predict/batch request; send fewer or smaller images")
        elif is_v2(path):  # an inference request holds one or more images, like a batch
            limit = settings.max_batch_bytes
            detail = (f"the request is larger than the {limit:,}-byte limit for a whole "
                      "inference request; send fewer or smaller images")
        else:
            limit = settings.max_upload_bytes + MULTIPART_SLACK
            detail = (f"the upload is larger than the {settings.max_upload_bytes:,}-byte limit "
                      "per image; send a smaller image")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return

        received = 0
        body_done = False
        response_started = False
        timeout_s = settings.body_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the client to hang up: no deadline then
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeoutError(timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(detail)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except (PayloadTooLargeError, BodyTimeoutError) as exc:
            if response_started:
                raise
            response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
            await response(scope, receive, send)
