"""A watchdog on the inference worker: a dead or hung worker ends the server process.

/healthz turns 503 when the micro-batcher's worker has crashed or has been stuck on one batch
for 2 × the request timeout, but nothing acts on that by itself (plain Docker only marks the
container unhealthy): every prediction would get 503 or 504 until someone noticed. So a thread
checks the service twice a second and, on a failure, asks the server to stop the way SIGTERM
does (the listening socket closes; requests already accepted finish or fail fast), and the
process then exits with code 70 (EX_SOFTWARE). `python -m app`'s supervisor starts a fresh
worker process in its place; run on its own, the container's restart policy restarts it.

A thread, not an asyncio task, so that it still runs when the event loop is the thing that is
blocked; `os._exit`, not a normal exit, because a hung inference thread would block the
interpreter's own exit forever (it joins thread-pool threads).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

EXIT_WORKER_FAILED = 70  # EX_SOFTWARE: "an internal software error has been detected"
CHECK_INTERVAL_S = 0.5
JOIN_TIMEOUT_S = 5.0  # one check is a few attribute reads; this bounds a stuck one


def stop_this_server() -> None:
    """What SIGTERM does: uvicorn's graceful shutdown, then the lifespan's shutdown."""
    os.kill(os.getpid(), signal.SIGTERM)


class Watchdog:
    """Polls `check()` (a reason, or None while all is well) from a daemon thread.

    On the first reason: logs it, calls `stop_server()`, and if the process is still alive
    `grace_s` later, ends it with `exit(EXIT_WORKER_FAILED)`. The lifespan calls `finish()`
    at the end of its shutdown, which exits at once with that code if the watchdog fired.
    """

    def __init__(
        self,
        check: Callable[[], str | None],
        *,
        grace_s: float,
        interval_s: float = CHECK_INTERVAL_S,
        stop_server: Callable[[], None] = stop_this_server,
        exit: Callable[[int], object] = os._exit,
        loop_held: Callable[[], bool] = lambda: False,
    ) -> None:
        """`loop_held()`: the event loop itself is stuck, so a graceful shutdown cannot run;
        on a failure then the process exits at once instead of after `grace_s`."""
        self._check = check
        self._loop_held = loop_held
        self.grace_s = grace_s
        self.interval_s = interval_s
        self._stop_server = stop_server
        self._exit = exit
        self.reason: str | None = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def fired(self) -> bool:
        return self.reason is not None

    def _run(self) -> None:
        while not self._finished.wait(self.interval_s):
            try:
                reason = self._check()
            except Exception:  # a bug in the check must not kill the watchdog silently
                logger.exception("watchdog check failed")
                continue
            if reason is not None:
                break
        else:
            return
        self.reason = reason
        logger.critical(
            "%s; stopping this server process (exit code %d) so that it is restarted",
            reason, EXIT_WORKER_FAILED, extra={"pid": os.getpid()},
        )
        if self._loop_held():
            logger.critical("the event loop is held by the stuck call; exiting now")
            self._exit(EXIT_WORKER_FAILED)
            return
        self._stop_server()
        time.sleep(self.grace_s)  # the graceful shutdown should have ended us by now
        logger.critical("graceful shutdown did not finish in %g s; exiting", self.grace_s)
        self._exit(EXIT_WORKER_FAILED)

    def finish(self) -> None:
        """Stop watching. If the watchdog fired, exit now with its code: nothing is left to
        serve, and a hung inference thread would keep the interpreter from exiting.

        Otherwise wait for the thread to end. Its `check` may hold the last reference to the
        service and so to the model. A daemon thread that frees tensors while the
        interpreter is finalizing gets killed as it takes the GIL back, and in libtorch's
        code that aborts the process (SIGABRT, "terminate called without an active
        exception"): 4 in 40 stops of a 2-worker server did so before this join."""
        self._finished.set()
        if self.reason is not None:
            logger.critical("exiting with code %d: %s", EXIT_WORKER_FAILED, self.reason)
            self._exit(EXIT_WORKER_FAILED)
            return
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT_S)
