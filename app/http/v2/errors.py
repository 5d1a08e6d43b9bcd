"""Error bodies on the Open Inference Protocol routes (/v2): `{"error": "..."}`, as the protocol
says, where the rest of the app answers `{"detail": "..."}`.

The /v2 handlers write their own errors. Others reach a /v2 request before or around them: the
API key, queue-full and body-limit refusals of UploadGuardMiddleware (before routing), the app's
exception handlers (queue full, timeout, worker down, 500), Starlette's 404 and 405, and the
last-resort 500 of RequestContextMiddleware. `V2ErrorBodies` turns those `{"detail": ...}`
bodies into `{"error": ...}` on /v2 paths, keeping status and headers, so that each error is
still written in one place.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status, headers,
                    media_type="application/json")


def _as_v2(body: bytes) -> bytes | None:
    """`{"detail": d, ...}` → `{"error": d}` (and the request id of a 500); None to leave the
    body as it is."""
    try:
        content: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(content, dict) or "detail" not in content or "error" in content:
        return None
    detail = content["detail"]
    error: dict[str, Any] = {"error": detail if isinstance(detail, str) else str(detail)}
    if "request_id" in content:
        error["request_id"] = content["request_id"]
    return orjson.dumps(error)


class V2ErrorBodies:
    """Rewrites JSON `{"detail": ...}` error bodies on /v2 paths as `{"error": ...}`. Other
    paths pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["type"] != "http" or not is_v2(path):
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # the start of an error response, until its body is in
        chunks: list[bytes] = []

        async def send_v2(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = MutableHeaders(scope=message).get("content-type", "")
                if message["status"] >= 400 and content_type.startswith("application/json"):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                body = _as_v2(body) or body
                headers = MutableHeaders(scope=held)
                headers["content-length"] = str(len(body))
                await send(held)
                held = None
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self.app(scope, receive, send_v2)
