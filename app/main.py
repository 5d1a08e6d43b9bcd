"""The FastAPI application: `uvicorn app.main:app`.

Building the app is cheap: settings are read and the model is loaded in the lifespan, at
server start, not at import.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.http.errors import install_error_handlers
from app.http.middleware import RequestContextMiddleware, UploadGuardMiddleware
from app.http.openapi import install_openapi
from app.http.routes import health, metrics, model, predict, ui, v2
from app.http.v2.errors import V2ErrorBodies
from app.lifespan import QuietStartupFailure, lifespan
from app.observability import Metrics
from app.settings import Settings

DESCRIPTION = """Classifies images with a CIFAR-10-style CNN loaded from a checkpoint.

Upload with multipart/form-data. Every response carries `X-Request-ID`; errors are
`{"detail": "..."}` saying what was wrong and what is accepted.

The Open Inference Protocol (KServe V2) is served under `/v2` beside this API, with the same
limits; its errors are `{"error": "..."}` (docs/open-inference-protocol.md)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; `settings` replaces the environment (tests pass their own)."""
    app = FastAPI(title="cnn-serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings_override = settings
    app.state.settings = settings
    app.state.service = None
    app.state.metrics = Metrics()
    install_error_handlers(app)
    routers = [module.router for module in (predict, health, model, metrics, ui, v2)]
    for router in routers:
        app.include_router(router)
    # The routes themselves, for labelling requests the middleware refuses before routing:
    # FastAPI keeps included routers in a wrapper that does not match a scope by itself.
    app.state.api_routes = [route for router in routers for route in router.routes]
    install_openapi(app)
    app.add_middleware(UploadGuardMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.add_middleware(V2ErrorBodies)  # outside the others: reshapes their errors on /v2
    app.add_middleware(QuietStartupFailure)  # outermost; only sees the lifespan
    return app


app = create_app()
