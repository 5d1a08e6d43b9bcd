"""Several server processes on one port, started and watched by a small supervisor.

uvicorn's `--workers` shares one listening socket between its processes, and whichever process
wakes first accepts every connection waiting. A burst of keep-alive connections (a proxy's
pool, or wrk's 32) split between two workers like 28/4, 30/2 or 32/0 in our measurements, so
one core sat idle while the other queued. Two better ways, by the `balance` setting:
- `deal` (default): the supervisor alone listens, accepts each connection and hands it to the
  workers in turn (app/server/dealer.py): 32 connections split 16/16.
- `reuseport`: each worker has an SO_REUSEPORT listening socket of its own and the kernel
  hashes each new connection to one of them, independently of who is awake: 13/19 … 21/11.

The supervisor stays small:
- it starts the workers and passes SIGTERM/SIGINT on to them; once they have all exited it
  exits 0 (1 if one had to be killed, or exited with an error while stopping). A worker still
  running `stop_timeout_s` after the signal is killed, so shutdown is bounded.
- it passes SIGHUP on to every worker, each of which reloads the model (app/reload.py), and
  goes on itself.
- a worker that exits while the service is running (killed, out of memory, or ended by its
  watchdog because its inference worker died or hung) is replaced by a fresh process. The
  others keep serving meanwhile: new connections go only to workers that are ready.
- a worker that fails at startup (bad settings or checkpoint, exit status 3), or more than
  MAX_RESTARTS replacements within RESTART_WINDOW_S, stops everything with a non-zero exit,
  so a container restarts the whole service instead of looping or running short of workers.
- a worker whose supervisor dies (even by SIGKILL) gets SIGTERM from the kernel and stops.
- the workers' Prometheus metrics live in one folder (PROMETHEUS_MULTIPROC_DIR; a temporary one
  unless set), so /metrics on any worker reports all of them; a dead worker's live gauges are
  dropped, its counters kept. See app/observability.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import multiprocess

from app.observability import METRICS_DIR_VARIABLE
from app.server.dealer import Dealer, channel_pair
from app.server.serving import APP, STARTUP_FAILURE, serve

logger = logging.getLogger("uvicorn.error")

MAX_RESTARTS = 5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RESTART_WINDOW_S = 60.0


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _die_with(parent_pid: int) -> None:
    """Linux: have the kernel send this process SIGTERM when the supervisor dies, even by
    SIGKILL, so no orphaned worker goes on serving the port. Elsewhere: nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve_process(host: str, port: int, options: dict[str, Any], parent_pid: int,
                  channel: socket.socket | None) -> None:
    """One worker process, one uvicorn server: on its own socket on the shared port, or
    serving the connections the supervisor deals to it over `channel`."""
    _die_with(parent_pid)
    if channel is not None:
        sys.exit(serve(options, channel=channel, host=host, port=port))
    sock = reuseport_socket(host, port)
    sys.exit(serve(options, sockets=[sock], host=host, port=port))


def _clean(exitcode: int | None) -> bool:
    return exitcode in (0, -signal.SIGTERM, -signal.SIGINT)


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, stop_timeout_s: float,
                 options: dict[str, Any], dealer: Dealer | None = None,
                 target: Callable[..., None] = serve_process) -> None:
        self.host, self.port, self.options = host, port, options
        self.target = target  # what each worker process runs: serve_process's signature
        self.dealer = dealer
        self.stop_timeout_s = stop_timeout_s
        self._spawn = multiprocessing.get_context("spawn")
        self.slots: list[BaseProcess | None] = [None] * workers
        self.restarts: deque[float] = deque()
        self.stop_deadline: float | None = None
        self.failed: int | None = None
        self._hup = False  # a SIGHUP to pass on
        # stop() runs as a signal handler, between any two lines of the loop: all it may do is
        # note the deadline, signal the workers and wake the loop through this pair, which
        # then stops the dealer (closing its socket there could pull it out from under wait()).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # --- processes ---------------------------------------------------------------------------
    def start(self, slot: int) -> None:
        ours = theirs = None
        if self.dealer is not None:
            ours, theirs = channel_pair()
        proc = self._spawn.Process(
            target=self.target, args=(self.host, self.port, self.options, os.getpid(), theirs),
            name=f"worker-{slot}",
        )
        # The worker starts with SIGHUP blocked (the mask survives fork and exec) until
        # serve() ignores it: passed on before that, it would kill the worker. Here, one
        # arriving meanwhile waits the few milliseconds of start().
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.slots[slot] = proc
        if self.dealer is not None and ours is not None and theirs is not None:
            theirs.close()  # the worker has it now
            self.dealer.add(slot, ours)

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        if self.stop_deadline is not None:
            return
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        with contextlib.suppress(BlockingIOError):  # already full: the loop is awake anyway
            self._wake_w.send(b"\0")
        for proc in self.slots:
            if proc is not None and proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def reload(self, signum: int = signal.SIGHUP, frame: FrameType | None = None) -> None:
        """SIGHUP's handler: the loop passes it on to the workers (like `stop`, all a handler
        does is note it and wake the loop)."""
        self._hup = True
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"\0")

    def _pass_on_hup(self) -> None:
        self._hup = False
        if self.stop_deadline is not None:
            return
        pids = [p.pid for p in self.slots if p is not None and p.is_alive() and p.pid is not None]
        logger.info("SIGHUP: passed on to %d workers, to reload the model", len(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(pid, signal.SIGHUP)

    def _fail(self, status: int, why: str, *args: object) -> None:
        logger.error(why + "; stopping the others", *args)
        if self.failed is None:
            self.failed = status
        self.stop()

    def _exited(self, slot: int, proc: BaseProcess) -> None:
        proc.join()
        self.slots[slot] = None
        if self.dealer is not None:
            self.dealer.remove(slot)
        if proc.pid is not None:
            multiprocess.mark_process_dead(proc.pid)
        code = proc.exitcode
        if self.stop_deadline is not None:
            if not _clean(code) and self.failed is None:
                logger.error("worker %s [%s] exited with %s while stopping",
                             proc.name, proc.pid, code)
                self.failed = 1
            return
        if code == STARTUP_FAILURE:
            self._fail(STARTUP_FAILURE, "worker %s [%s] failed to start", proc.name, proc.pid)
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            self._fail(1, "worker %s [%s] exited with %s, the %dth exit within %g s",
                       proc.name, proc.pid, code, MAX_RESTARTS + 1, RESTART_WINDOW_S)
            return
        self.restarts.append(now)
        logger.error("worker %s [%s] exited with %s; starting a new one",
                     proc.name, proc.pid, code)
        self.start(slot)

    # --- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        signal.signal(signal.SIGHUP, self.reload)
        for slot in range(len(self.slots)):
            self.start(slot)
        try:
            return self._loop()
        finally:
            if self.dealer is not None:
                self.dealer.close()
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self) -> int:
        while running := {p.sentinel: (i, p) for i, p in enumerate(self.slots) if p is not None}:
            # A bounded wait even while serving, so the loop notices the stop deadline; a
            # signal wakes it through the wake-up pair (PEP 475: wait() itself goes on).
            timeout = 1.0
            if self.stop_deadline is not None:
                timeout = min(timeout, max(0.0, self.stop_deadline - time.monotonic()))
                if self.dealer is not None:
                    self.dealer.close()  # new connections are refused from now on
            waitables: list[Any] = [*running, self._wake_r]
            if self.dealer is not None:
                waitables += self.dealer.waitables()
                timeout = self.dealer.timeout(timeout)
            ready = wait(waitables, timeout=timeout)
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(64)
                ready.remove(self._wake_r)
            if self._hup:
                self._pass_on_hup()
            for sentinel in ready:
                if sentinel in running:
                    self._exited(*running[sentinel])
            if self.dealer is not None:
                for slot in self.dealer.handle(ready):
                    if (proc := self.slots[slot]) is not None:
                        logger.info("worker %s [%s] ready for connections", proc.name, proc.pid)
                ready = [r for r in ready if r in running]
            if not ready and self.stop_deadline is not None and (
                time.monotonic() >= self.stop_deadline
            ):
                for _, proc in running.values():
                    logger.error("worker %s [%s] still running %g s after SIGTERM; killing it",
                                 proc.name, proc.pid, self.stop_timeout_s)
                    proc.kill()
                self.failed = self.failed or 1
                self.stop_deadline = float("inf")  # killed once; now wait for them
        return self.failed or 0


def run(host: str, port: int, workers: int, stop_timeout_s: float = 30.0, deal: bool = True,
        target: Callable[..., None] = serve_process, **options: Any) -> int:
    """Serve the app from `workers` processes; returns the exit status for the supervisor.
    `deal`: the supervisor accepts every connection and deals it to the workers in turn
    (app/server/dealer.py); otherwise each worker listens on its own SO_REUSEPORT socket.
    `target` runs in each worker process (bench/noop_app.py serves another app with it)."""
    config = uvicorn.Config(APP, **options)
    config.configure_logging()
    reserved = reuseport_socket(host, port)  # holds the port, and resolves port 0
    port = reserved.getsockname()[1]
    logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                f"[{host}]" if ":" in host else host, port)
    logger.info("Started supervisor [%d] with %d workers, %s", os.getpid(), workers,
                "connections dealt in turn" if deal else "one SO_REUSEPORT socket each")
    dealer = Dealer(reserved, config.backlog) if deal else None
    metrics_dir = None
    if not os.environ.get(METRICS_DIR_VARIABLE):
        metrics_dir = tempfile.mkdtemp(prefix="cnn-serve-metrics-")
        os.environ[METRICS_DIR_VARIABLE] = metrics_dir  # inherited by the workers
    try:
        return Supervisor(host, port, workers, stop_timeout_s, options, dealer, target).run()
    finally:
        reserved.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            del os.environ[METRICS_DIR_VARIABLE]
