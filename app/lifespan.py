"""Startup and shutdown: settings, model load, warm-up, the inference worker, and the
SIGHUP handler that reloads the model (app/reload.py).

Startup fails (and uvicorn exits non-zero) on bad settings or an unusable checkpoint, after
one log line that names the variable or the file and the reason. Nothing is ever served from
random weights: the network only exists once its checkpoint has loaded strictly.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.inference.service import INLINE_MAX_SIDE, InferenceService, ServiceLimits
from app.inference.watchdog import Watchdog
from app.observability import Metrics, configure_logging
from app.reload import ModelReloader, load_model
from app.settings import Settings, SettingsError, load_settings, unknown_variables
from models.checkpoint import CheckpointError

logger = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service cannot start; the message says why."""


def _limits(settings: Settings) -> ServiceLimits:
    return ServiceLimits(
        max_batch_size=settings.max_batch_size,
        max_batch_wait_s=settings.max_batch_wait_ms / 1000,
        queue_capacity=settings.queue_capacity,
        request_timeout_s=settings.request_timeout_s,
        decode_threads=settings.decode_threads,
        inline_decode_max_bytes=settings.inline_decode_bytes,
        inline_when_idle_max_s=settings.inline_when_idle_max_ms / 1000,
    )


def _fail(app: FastAPI, reason: str) -> None:
    logger.error("startup failed: %s", reason)
    app.state.startup_failure_logged = True
    raise StartupError(reason)


def _resolve_settings(app: FastAPI) -> Settings:
    given: Settings | None = app.state.settings_override
    if given is not None:
        configure_logging(given.log_level)
        return given
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging("info")
        _fail(app, str(exc))
    configure_logging(settings.log_level)
    for name in unknown_variables():
        logger.warning("ignoring %s: no such setting (a typo?)", name)
    return settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = _resolve_settings(app)
    torch.set_num_threads(settings.torch_threads)
    metrics: Metrics = app.state.metrics
    reloader = ModelReloader(settings, metrics)
    # Before the checkpoint is read: a SIGHUP from now on reloads once the service is up, and
    # one sent earlier (ignored until now by app/server/serving.py) finds the new file here.
    reloader.listen()
    try:
        predictor, one_image_s = await asyncio.to_thread(load_model, settings)
    except CheckpointError as exc:
        await reloader.close()
        _fail(app, str(exc))

    service = InferenceService(predictor, _limits(settings), on_batch=metrics.observe_batch,
                               on_depth=metrics.set_queue_depth, one_image_s=one_image_s)
    if one_image_s is not None:
        logger.info(
            "idle fast path %s: one %d×%d upload takes %.2f ms, the limit is %g ms "
            "(CNN_SERVE_INLINE_WHEN_IDLE_MAX_MS)",
            "on" if service.inline_when_idle else "off", INLINE_MAX_SIDE, INLINE_MAX_SIDE,
            one_image_s * 1000, settings.inline_when_idle_max_ms,
        )
    service.start()
    metrics.set_model({**predictor.describe(), "device": str(predictor.device)})
    app.state.settings = settings
    app.state.service = service
    app.state.reloader = reloader
    reloader.serve(service)
    watchdog = None
    if settings.exit_on_worker_failure:
        # Grace: what the server's own graceful shutdown may take, plus the lifespan's.
        watchdog = Watchdog(service.failure, grace_s=settings.shutdown_timeout_s + 5,
                            loop_held=lambda: service.batcher.holding_the_loop)
        watchdog.start()
    if settings.gc_freeze:
        # Everything alive now (torch, FastAPI, the model) lives as long as the process. Left
        # in the collected generations, each full collection walked all of it: 100-200 ms with
        # the event loop stopped, the p99 of a loaded server. Frozen, they are never scanned.
        gc.collect()
        gc.freeze()
    logger.info(
        "ready: serving %s (%s, sha256 %s) on %s", predictor.name, predictor.meta.arch,
        predictor.sha256[:12], predictor.device,
        extra={"model_path": str(settings.model_path), "classes": len(predictor.classes)},
    )
    del predictor  # the service's own: after a reload, nothing else may keep the old one alive
    try:
        yield
    finally:
        await reloader.close()
        app.state.service = None
        if settings.gc_freeze:
            gc.unfreeze()  # several apps may start and stop in one process (tests)
        await service.stop()
        logger.info("stopped")
        if watchdog is not None:
            watchdog.finish()  # exits the process if the worker had failed


class QuietStartupFailure:
    """For a StartupError, the one line logged above says it all: keep uvicorn from logging
    its traceback after it. Any other startup failure keeps its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Message) -> None:
            state = scope["app"].state
            if message["type"] == "lifespan.startup.failed" and getattr(
                state, "startup_failure_logged", False
            ):
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)
