"""app/server/dealer.py: the supervisor deals accepted connections to ready workers in turn."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator
from multiprocessing.connection import wait

import pytest
import uvicorn

from app.server.dealer import ACCEPT_PAUSE_S, CONNECTION, READY, Dealer, DealtServer, channel_pair


class FakeWorker:
    """The worker's end of a channel, read by hand."""

    def __init__(self, end: socket.socket, opened: list[socket.socket]) -> None:
        self.end = end
        self.end.setblocking(False)
        self.opened = opened

    def received(self) -> list[socket.socket]:
        conns = []
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.end, 1, 1)
            except BlockingIOError:
                return conns
            assert data == CONNECTION and len(fds) == 1
            conns.append(socket.socket(fileno=fds[0]))
            self.opened.append(conns[-1])


class Harness:
    """A dealer on a free port, fake workers and clients; everything closed afterwards."""

    def __init__(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.address = listener.getsockname()
        self.dealer = Dealer(listener, backlog=64)
        self.opened: list[socket.socket] = []

    def add_worker(self, slot: int, ready: bool = True) -> FakeWorker:
        ours, theirs = channel_pair()
        self.dealer.add(slot, ours)
        worker = FakeWorker(theirs, self.opened)
        self.opened.append(theirs)
        if ready:
            theirs.send(READY)
            assert self.step() == [slot]  # it has just become ready
            assert self.step(timeout=0.0) == []  # and only once
        return worker

    def step(self, timeout: float = 1.0) -> list[int]:
        """One turn of the supervisor's loop, as far as the dealer is concerned."""
        return self.dealer.handle(wait(self.dealer.waitables(), timeout=timeout))

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.address, timeout=5)
        self.opened.append(client)
        return client

    def deal(self, clients: int) -> list[socket.socket]:
        conns = [self.connect() for _ in range(clients)]
        self.step()
        return conns

    def close(self) -> None:
        self.dealer.close()
        for slot in list(self.dealer.channels):
            self.dealer.remove(slot)
        for sock in self.opened:
            sock.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def test_connections_are_refused_until_a_worker_is_ready(harness: Harness) -> None:
    harness.add_worker(0, ready=False)
    with pytest.raises(ConnectionRefusedError):
        harness.connect()
    assert harness.dealer.ready == [] and harness.dealer.listener not in harness.dealer.waitables()


def test_an_idle_dealer_lets_the_supervisor_sleep_the_whole_wait(harness: Harness) -> None:
    # Nothing pending, no pause: a shorter wait would have the supervisor poll in a loop
    # (it did, at 100% of a core, while every worker sat idle).
    harness.add_worker(0)
    assert harness.dealer.timeout(1.0) == 1.0
    harness.connect()
    harness.step()
    assert harness.dealer.timeout(0.5) == 0.5  # and again after dealing a connection


def test_connections_are_dealt_to_the_ready_workers_in_turn(harness: Harness) -> None:
    workers = [harness.add_worker(slot) for slot in range(2)]
    clients = harness.deal(32)
    shares = [w.received() for w in workers]
    assert [len(s) for s in shares] == [16, 16]
    # Each dealt socket is the accepted end of one client's connection.
    assert {s.getpeername() for share in shares for s in share} == \
        {c.getsockname() for c in clients}
    dealt = shares[1][0]
    client = next(c for c in clients if c.getsockname() == dealt.getpeername())
    client.sendall(b"ping")
    assert dealt.recv(4) == b"ping"


def test_a_worker_that_closed_its_channel_gets_nothing_more(harness: Harness) -> None:
    first, second = harness.add_worker(0), harness.add_worker(1)
    first.end.close()  # stopping, or died
    harness.step()
    assert harness.dealer.ready == [1] and 0 not in harness.dealer.channels
    harness.deal(4)
    assert len(second.received()) == 4


def fill(channel: socket.socket) -> int:
    """Fill a channel as a worker that stopped reading would leave it; the bytes sent."""
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:
            sent += channel.send(b"x" * 4096)
    return sent


def test_a_worker_with_a_full_channel_is_skipped(harness: Harness) -> None:
    busy, free = harness.add_worker(0), harness.add_worker(1)
    fill(harness.dealer.channels[0])
    harness.deal(6)
    assert len(free.received()) == 6
    data, fds = b"", []
    while True:  # what reached the busy worker: the filler, no connection
        try:
            more, more_fds, _, _ = socket.recv_fds(busy.end, 1 << 20, 4)
        except BlockingIOError:
            break
        data, fds = data + more, fds + more_fds
    assert fds == [] and set(data) == {ord("x")}


def test_with_every_channel_full_a_connection_waits_and_accepting_pauses(
    harness: Harness,
) -> None:
    worker = harness.add_worker(0)
    dealer = harness.dealer
    filled = fill(dealer.channels[0])
    [client] = harness.deal(1)
    assert len(dealer.pending) == 1 and dealer.listener not in dealer.waitables()
    assert dealer.timeout(1.0) < 1.0  # retried soon, without a new connection to wake it
    drained = 0
    while drained < filled:  # the worker catches up
        drained += len(worker.end.recv(1 << 20))
    harness.step(timeout=0.0)
    assert not dealer.pending and dealer.listener in dealer.waitables()
    [conn] = worker.received()
    assert conn.getpeername() == client.getsockname()


def test_closing_the_dealer_refuses_new_connections(harness: Harness) -> None:
    harness.add_worker(0)
    harness.connect()
    harness.dealer.close()
    assert harness.dealer.waitables() == [harness.dealer.channels[0]]
    with pytest.raises(ConnectionRefusedError):
        harness.connect()


class OutOfDescriptors:
    """A listening socket whose accept() fails as it does when the process has no fds left."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.attempts = 0

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.attempts += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def close(self) -> None:
        self.real.close()


def test_an_accept_error_pauses_accepting_instead_of_spinning(harness: Harness) -> None:
    worker = harness.add_worker(0)
    dealer = harness.dealer
    failing = OutOfDescriptors(dealer.listener)
    dealer.listener = failing  # type: ignore[assignment]
    client = harness.connect()
    harness.step()
    assert failing.attempts == 1
    assert failing not in dealer.waitables()  # the waiting connection no longer wakes it
    assert 0.0 < dealer.timeout(1.0) <= ACCEPT_PAUSE_S
    harness.step(timeout=0.0)
    assert failing.attempts == 1
    dealer.listener = failing.real  # descriptors again
    dealer.paused_until = 0.0  # the pause is over
    harness.step()
    [conn] = worker.received()
    assert conn.getpeername() == client.getsockname()


async def _empty_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("no request expected")


def test_a_worker_stops_cleanly_when_the_supervisor_closed_its_end_first() -> None:
    # The worker's shutdown reads what is left in its channel, finds it closed and stops
    # reading; stopping again afterwards used to fail on the closed descriptor.
    async def run() -> None:
        ours, theirs = channel_pair()
        ours.setblocking(False)
        config = uvicorn.Config(_empty_app, lifespan="off", log_level="warning")
        config.load()
        server = DealtServer(config, theirs)
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        assert await asyncio.get_running_loop().sock_recv(ours, 1) == READY
        ours.close()  # the supervisor goes away just as this worker stops
        await server.shutdown()
        assert theirs.fileno() == -1

    asyncio.run(run())
