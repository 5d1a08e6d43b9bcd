"""Several server processes on one port, each with a listening socket of its own (SO_REUSEPORT).

uvicorn's `--workers` shares one listening socket between its processes, and whichever process
wakes first accepts every connection waiting. A burst of keep-alive connections (a proxy's
pool, or wrk's 32) split between two workers like 28/4, 30/2 or 32/0 in our measurements, so
one core sat idle while the other queued. With one SO_REUSEPORT socket per process the kernel
hashes each new connection to one of them, independently of who is awake.

The supervisor stays small: it starts the workers, passes SIGTERM/SIGINT on to them, and exits
once they all have; if a worker fails (at startup or later) it stops the others and exits
non-zero, so a container restarts the whole service instead of running short of a worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger("uvicorn.error")

APP = "app.main:app"
STARTUP_FAILURE = 3  # what uvicorn exits with when the lifespan fails


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _serve(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: its own socket on the shared port, one uvicorn server."""
    sock = reuseport_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(APP, host=host, port=port, **options))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _clean(exitcode: int | None) -> bool:
    return exitcode in (0, -signal.SIGTERM, -signal.SIGINT)


def run(host: str, port: int, workers: int, **options: Any) -> int:
    """Serve the app from `workers` processes; returns the exit status for the supervisor."""
    uvicorn.Config(APP, **options).configure_logging()
    reserved = reuseport_socket(host, port)  # holds the port, and resolves port 0
    port = reserved.getsockname()[1]
    logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                f"[{host}]" if ":" in host else host, port)
    logger.info("Started supervisor [%d] with %d workers, one SO_REUSEPORT socket each",
                os.getpid(), workers)
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_serve, args=(host, port, options), name=f"worker-{i}")
             for i in range(workers)]
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    for proc in procs:
        proc.start()
    failed: int | None = None
    running = list(procs)
    while running:
        for sentinel in wait([proc.sentinel for proc in running]):
            proc = next(p for p in running if p.sentinel == sentinel)
            proc.join()
            running.remove(proc)
            if not (stopping and _clean(proc.exitcode)) and failed is None:
                failed = proc.exitcode if proc.exitcode and proc.exitcode > 0 else 1
                logger.error("worker %s [%s] exited with %s; stopping the others",
                             proc.name, proc.pid, proc.exitcode)
                stop()
    reserved.close()
    return failed or 0
