"""One uvicorn server process, configured and run the way `python -m app` does it.

- Connections: request headers must arrive within `header_timeout_s` (app/server/protocol.py), an
  idle keep-alive connection is closed after `keep_alive_timeout_s`, and after SIGTERM
  requests already accepted get `shutdown_timeout_s` to finish (uvicorn's graceful shutdown:
  the listening socket closes first, so new connections are refused).
- Exit status: 0 after a shutdown asked for with SIGTERM or SIGINT, 3 when startup fails,
  70 when the inference worker failed (app/inference/watchdog.py). uvicorn, once it has shut down,
  raises again the signal it caught, which killed the process by that signal: status 143
  under Docker or systemd, both of which count it as a failure. Here the signal is raised into
  a handler that does nothing, and the process exits 0.
- SIGHUP reloads the model (app/reload.py, installed by the lifespan). Until then it is
  ignored, not fatal: a worker still starting reads the new file anyway. (Plain `uvicorn`
  still dies of a SIGHUP sent before its lifespan starts.)
"""

from __future__ import annotations

import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from app.server.dealer import DealtServer
from app.server.protocol import http_protocol
from app.settings import Settings

APP = "app.main:app"
STARTUP_FAILURE = 3  # what uvicorn exits with when the lifespan fails


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments from the settings (all picklable). No access log:
    the app writes its own JSON line per request."""
    return {
        "log_level": settings.log_level,
        "access_log": False,
        "http": http_protocol(settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }


def _already_handled(signum: int, frame: FrameType | None) -> None:
    """Where uvicorn's re-raised SIGTERM/SIGINT lands once the server has shut down."""


def serve(
    options: dict[str, Any], *, sockets: list[socket.socket] | None = None,
    channel: socket.socket | None = None, **config: Any
) -> int:
    """Run one server until it is told to stop; the exit status for the process. With a
    `channel`, it serves the connections a supervisor deals to it (app/server/dealer.py)."""
    uv_config = uvicorn.Config(APP, **config, **options)
    server = uvicorn.Server(uv_config) if channel is None else DealtServer(uv_config, channel)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_handled)  # uvicorn puts this back before it re-raises
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the lifespan handles it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by a supervisor
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILURE
