"""Loading the model the settings name: at startup (app/lifespan.py) and again on SIGHUP.

A rollout without downtime: replace the file at MODEL_PATH, then send SIGHUP (the supervisor
of `python -m app` passes it on to every worker). Each worker process then
- loads the checkpoint with the startup's own `load_model` (device, TTA, BatchNorm folding,
  channels-last), warm-up included, and times the idle fast path's one-image call again for
  the new model (a slower model may lose the fast path, a faster one gain it; timed under
  load, a model reads slower than it is, which errs on the safe side). All of that
  runs in a thread of its own: the event loop and the inference thread go on serving the old
  model meanwhile;
- swaps it in on the event loop (`InferenceService.swap`): the next batch runs on the new
  model, batches already in the model finish on the old one, which is freed after them;
- refuses a checkpoint it cannot use (missing, corrupt, wrong shapes, NaN weights, another
  input size) with one log line naming the file and the reason, and goes on with the old one.
SIGHUPs that arrive during a reload are not lost: one more reload follows it, which reads
the file again. One that arrives during startup, after the handler is installed but possibly
after the checkpoint was read, reloads once the service is up.

Counted in cnn_serve_model_reloads_total{result="ok"|"failed"} (one per worker process);
cnn_serve_model_info, /model and /healthz follow the new checkpoint.

gc.freeze (CNN_SERVE_GC_FREEZE): the new model is allocated after the freeze, so the full
collections scan its Python objects (a few hundred modules and parameters; the tensors' memory
is not scanned), which is negligible; nothing is frozen again, which would also freeze
whatever requests were alive at that moment. The old model, frozen, is still freed by
reference counting once its last batch is done.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from app.inference.predictor import Predictor
from app.inference.service import INLINE_MAX_SIDE, InferenceService
from app.observability import Metrics
from app.settings import Settings
from models.checkpoint import CheckpointError

logger = logging.getLogger(__name__)


def load_model(settings: Settings) -> tuple[Predictor, float | None]:
    """The checkpoint at `settings.model_path`, loaded and warmed up, and what one idle fast
    path upload costs it (None when the fast path is off). Blocking: run it in a thread.
    Raises CheckpointError naming the file and the reason."""
    predictor = Predictor.from_checkpoint(
        settings.model_path, device=settings.device, max_pixels=settings.max_pixels,
        channels_last=settings.channels_last, libspng=settings.libspng,
        tta=settings.tta, fold_bn=settings.fold_batchnorm, precision=settings.precision,
    )
    one_image_s = None
    if settings.inline_when_idle_max_ms > 0:
        one_image_s = predictor.time_one_image(INLINE_MAX_SIDE)
    return predictor, one_image_s


def check_replaceable(current: Predictor, new: Predictor) -> None:
    """Raise CheckpointError when `new` cannot take over from `current` while serving:
    uploads already decoded (in the decode pool) have the current model's input size."""
    if new.input_size != current.input_size:
        raise CheckpointError(
            new.path, f"its input size {new.input_size}px differs from the served model's "
            f"{current.input_size}px; restart the service to change it",
        )


class ModelReloader:
    """SIGHUP → load MODEL_PATH again and swap it into the service (see the module's doc)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.service: InferenceService | None = None  # set by serve(), once started
        self._requested = False  # a SIGHUP not yet acted on
        self._task: asyncio.Task[None] | None = None
        self._previous_handler: Any = None
        self._listening = False

    # --- signal --------------------------------------------------------------------------------
    def listen(self) -> None:
        """SIGHUP → `request()` on this event loop. Signals reach only the main thread: in
        any other (an app in a test client) this does nothing; call `request` or `reload`."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_handler = signal.getsignal(signal.SIGHUP) or signal.SIG_DFL
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request)
        self._listening = True

    async def close(self) -> None:
        """Stop listening (a SIGHUP gets the handler from before: app/server/serving.py
        ignores it) and stop a reload in progress (its loading thread ends on its own)."""
        if self._listening:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._listening = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- reloads -------------------------------------------------------------------------------
    def serve(self, service: InferenceService) -> None:
        """The service is up: reload into it from now on, at once if asked during startup."""
        self.service = service
        if self._requested:
            self.request()

    def request(self) -> None:
        """Reload soon (call on the event loop); during a reload, once more after it."""
        self._requested = True
        if self.service is None or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._reload_while_requested(),
                                                            name="model-reload")

    async def settled(self) -> None:
        """Until the reloads asked for so far have run."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _reload_while_requested(self) -> None:
        while self._requested:
            self._requested = False
            await self.reload()

    async def reload(self) -> bool:
        """Load the checkpoint at MODEL_PATH and serve it from the next batch on. False when
        it cannot be used: one log line says why, and the current model goes on serving."""
        service = self.service
        if service is None:
            raise RuntimeError("the service has not started")
        old = service.predictor
        started = time.monotonic()
        try:
            new, one_image_s = await asyncio.to_thread(load_model, self.settings)
            check_replaceable(old, new)
        except Exception as exc:  # whatever it was, the old model goes on serving
            self.metrics.count_reload(ok=False)
            reason = str(exc) if isinstance(exc, CheckpointError) else (
                f"cannot load checkpoint {str(self.settings.model_path)!r}: "
                f"{type(exc).__name__}: {exc}")
            logger.error("reload refused, still serving %s (sha256 %s): %s", old.name,
                         old.sha256[:12], reason, exc_info=not isinstance(exc, CheckpointError))
            return False
        service.swap(new, one_image_s)
        self.metrics.set_model({**new.describe(), "device": str(new.device)})
        self.metrics.count_reload(ok=True)
        logger.info(
            "reloaded: serving %s (%s, sha256 %s) on %s, was sha256 %s; loaded and warmed up "
            "in %.2f s; idle fast path %s", new.name, new.meta.arch, new.sha256[:12],
            new.device, old.sha256[:12], time.monotonic() - started,
            "on" if service.inline_when_idle else "off",
            extra={"model_path": str(self.settings.model_path)},
        )
        return True
