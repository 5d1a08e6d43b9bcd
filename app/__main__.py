"""`python -m app`: uvicorn with host, port and worker processes taken from the settings.

Same as `uvicorn app.main:app --host … --port … --workers …`, but configured like the rest
of the service (CNN_SERVE_HOST, CNN_SERVE_PORT, CNN_SERVE_WORKERS; one worker process per
available CPU by default), with the connection timeouts of app/server/serving.py, exit status 0
after SIGTERM, and without uvicorn's access log, since the app writes its own JSON access
line per request. uvicorn picks uvloop and httptools when they are installed (they are, with
uvicorn[standard]). Several workers get a supervisor that replaces a worker that dies and
deals the connections to them in turn (app/server/workers.py, app/server/dealer.py), unless
CNN_SERVE_BALANCE=shared (uvicorn's own --workers).
"""

from __future__ import annotations

import socket
import sys

import uvicorn

from app.server import workers
from app.server.serving import APP, serve, uvicorn_options
from app.settings import Settings, SettingsError, available_cpus, load_settings

# How long the supervisor waits for its workers after SIGTERM, beyond their own graceful
# shutdown, before it kills them: the lifespan's shutdown and the interpreter's exit.
STOP_MARGIN_S = 5.0


def oversubscription(settings: Settings) -> str | None:
    """A warning when the processes' torch threads alone outnumber the CPUs."""
    workers, threads, cpus = settings.worker_count, settings.torch_threads, available_cpus()
    if workers * threads <= cpus:
        return None
    return (f"cnn-serve: warning: {workers} workers × {threads} torch threads = "
            f"{workers * threads} > {cpus} CPUs; the threads will fight over the cores "
            "(lower CNN_SERVE_WORKERS or CNN_SERVE_TORCH_THREADS)")


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"cnn-serve: {exc}")
    if warning := oversubscription(settings):
        print(warning, file=sys.stderr)
    options = uvicorn_options(settings)
    if settings.worker_count == 1:
        sys.exit(serve(options, host=settings.host, port=settings.port))
    if settings.balance != "shared" and hasattr(socket, "SO_REUSEPORT"):
        sys.exit(workers.run(settings.host, settings.port, settings.worker_count,
                             stop_timeout_s=settings.shutdown_timeout_s + STOP_MARGIN_S,
                             deal=settings.balance == "deal", **options))
    uvicorn.run(  # uvicorn's own supervisor, one shared socket
        APP, host=settings.host, port=settings.port, workers=settings.worker_count, **options,
    )


if __name__ == "__main__":
    main()
