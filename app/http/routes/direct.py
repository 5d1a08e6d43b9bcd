"""An APIRoute for endpoints that take the Request and return a Response themselves.

FastAPI builds a request handler for every route that, on each request, solves the route's
dependencies, validates its parameters and serialises what the endpoint returns. The predict
routes declare none of that (they read `top_k` and the multipart body themselves and return
bytes written by orjson), yet with only a `request: Request` parameter the machinery still cost
about a sixth of the event loop's time per /predict (cProfile of the ASGI app). `DirectRoute`
keeps everything else: the route is documented from the same decorator arguments, and
exceptions still go through the app's exception handlers (FastAPI wraps the handler this
returns exactly as it wraps its own).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if not inspect.iscoroutinefunction(endpoint) or [p.annotation for p in parameters] not in (
            [Request], ["Request"]
        ):
            raise TypeError(f"{endpoint.__name__}: a DirectRoute endpoint must be "
                            "`async def endpoint(request: Request) -> Response`")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint
