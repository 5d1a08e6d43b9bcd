"""Connections dealt to the workers in turn by the supervisor, instead of hashed by the kernel.

With one SO_REUSEPORT socket per worker the kernel hashes each connection's addresses to a
worker, which is even on average but not for a handful of long keep-alive connections: wrk's
32 split 13/19, 21/11, 12/20 between two workers (counted with `ss`), and a worker with 21
connections answers each of them later than one with 11, which is what the p99 shows. Here the
supervisor alone listens; it accepts each connection and passes the open socket to the next
worker that is ready (SCM_RIGHTS over a Unix socket pair per worker), so 32 connections split
16/16. Node's cluster module does the same on Linux for the same reason.

- Supervisor side (`Dealer`): listens only once a worker is ready, so until then connections
  are refused, as with a worker's own socket; stops listening when told to stop, so new
  connections are refused at once. A worker that is not reading (its channel full) is skipped;
  when every worker is full, the connection waits in the dealer and accepting pauses.
- Worker side (`DealtServer`): a uvicorn server without a listening socket that serves the
  connections arriving on its channel with uvicorn's own HTTP protocol (so keep-alive,
  timeouts, limits and graceful shutdown work as before), and says READY once its lifespan has
  started. On shutdown it first serves what is already in its channel, then closes it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import deque
from typing import Any

import uvicorn

logger = logging.getLogger("uvicorn.error")

READY = b"R"  # worker → supervisor, once, when it serves
CONNECTION = b"C"  # supervisor → worker, one byte carrying one socket
# Errors accept() returns for one connection that went away, or when out of descriptors or
# memory: the listening socket itself is fine, so the dealer goes on after a pause (the
# connection is still waiting, so without one it would retry, and log, in a tight loop).
_ACCEPT_ERRORS = (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                  errno.EPROTO, errno.EPERM)
ACCEPT_PAUSE_S = 0.1


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor's end, worker's end) of one worker's channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


class Dealer:
    """The supervisor's listening socket and its workers' channels, by slot."""

    def __init__(self, listener: socket.socket, backlog: int) -> None:
        self.listener = listener
        self.backlog = backlog
        self.listener.setblocking(False)
        self.channels: dict[int, socket.socket] = {}
        self.ready: list[int] = []  # slots, in the order they are dealt to
        self.pending: deque[socket.socket] = deque()
        self.listening = False
        self.closed = False
        self.paused_until = 0.0  # time.monotonic() after an accept() error
        self._turn = 0

    def add(self, slot: int, channel: socket.socket) -> None:
        self.remove(slot)
        channel.setblocking(False)
        self.channels[slot] = channel

    def remove(self, slot: int) -> None:
        if slot in self.ready:
            self.ready.remove(slot)
        if (channel := self.channels.pop(slot, None)) is not None:
            channel.close()

    def close(self) -> None:
        """Stop accepting: new connections are refused from now on. (Once is enough.)"""
        if self.closed:
            return
        self.closed = True
        self.listener.close()
        while self.pending:
            self.pending.popleft().close()

    def waitables(self) -> list[Any]:
        """What the supervisor waits on for the dealer, besides its processes."""
        objects: list[Any] = list(self.channels.values())
        if (self.listening and not self.pending and not self.closed
                and time.monotonic() >= self.paused_until):
            objects.append(self.listener)
        return objects

    def timeout(self, timeout: float) -> float:
        """The supervisor's wait, shortened to retry full channels or end a pause."""
        if self.pending:
            return min(timeout, 0.01)
        pause = self.paused_until - time.monotonic()
        return min(timeout, pause) if pause > 0 else timeout  # not paused: no shorter

    def handle(self, ready: list[Any]) -> list[int]:
        """After a wait: read the channels that spoke, accept and deal what is waiting.
        Returns the slots of the workers that have just become ready."""
        became_ready = [slot for slot, channel in list(self.channels.items())
                        if channel in ready and self._read(slot, channel)]
        while self.pending and self._deal(self.pending[0]):
            self.pending.popleft()
        if self.listener in ready and not self.closed:
            self._accept()
        return became_ready

    # --- inside ------------------------------------------------------------------------------
    def _read(self, slot: int, channel: socket.socket) -> bool:
        """What a worker said; True when it has just become ready."""
        try:
            data = channel.recv(64)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # the worker closed its end: stopping, or gone
            self.remove(slot)
            return False
        if READY not in data or slot in self.ready:
            return False
        self.ready.append(slot)
        if not self.listening and not self.closed:
            self.listener.listen(self.backlog)
            self.listening = True
        return True

    def _accept(self) -> None:
        while not self.pending:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_ERRORS:
                    raise
                logger.warning("accepting a connection failed (%s); retrying in %g s",
                               exc, ACCEPT_PAUSE_S)
                self.paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            if not self._deal(conn):
                self.pending.append(conn)

    def _deal(self, conn: socket.socket) -> bool:
        """Pass `conn` to the next ready worker that takes it; False when none can."""
        for _ in range(len(self.ready)):
            self._turn = (self._turn + 1) % len(self.ready)
            slot = self.ready[self._turn]
            try:
                socket.send_fds(self.channels[slot], [CONNECTION], [conn.fileno()])
            except BlockingIOError:  # this worker has a backlog of its own; try the next
                continue
            except OSError:  # it is gone; its exit is handled with its process
                self.remove(slot)
                return self._deal(conn)
            conn.close()  # the worker has its own copy now
            return True
        return False


class DealtServer(uvicorn.Server):
    """A uvicorn server for connections the supervisor deals to it over `channel`."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self._receiving = False
        self._handoffs: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # no listening socket of its own
        if not self.started:
            return
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self._receive)
        self._receiving = True
        self.channel.send(READY)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._receiving:
            self._receive()  # what was already dealt to this worker is served, not dropped
        self._stop_receiving()
        if self._handoffs:
            await asyncio.wait(self._handoffs)
        await super().shutdown(sockets=sockets)

    def _stop_receiving(self) -> None:
        if not self._receiving:  # already: the supervisor closed its end first
            return
        self._receiving = False
        asyncio.get_running_loop().remove_reader(self.channel.fileno())
        self.channel.close()  # the supervisor sees it closed and deals to the others

    def _protocol(self) -> asyncio.Protocol:
        """The connection's protocol, made as uvicorn makes it for its own listening sockets."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state,
        )

    def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, 1, 1)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            for fd in fds:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                task = loop.create_task(loop.connect_accepted_socket(self._protocol, sock))
                self._handoffs.add(task)
                task.add_done_callback(self._handed_off)
            if not data and not fds:  # the supervisor is gone; the kernel stops this one too
                self._stop_receiving()
                return

    def _handed_off(self, task: asyncio.Task[Any]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("a dealt connection could not be served: %s", exc)
