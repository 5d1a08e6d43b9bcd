"""app/server/workers.py's supervisor loop, with a stand-in worker process instead of a real one."""

from __future__ import annotations

import os
import signal
import socket
from multiprocessing import connection
from typing import Any

import pytest

from app.server import workers
from app.server.dealer import Dealer
from app.server.workers import Supervisor


class StandInWorker:
    """What the supervisor uses of a worker process: it exits when `exit()` is called."""

    name, pid, exitcode = "worker-0", None, 0

    def __init__(self) -> None:
        self.sentinel, self._alive = os.pipe()

    def exit(self) -> None:
        os.close(self._alive)  # the sentinel becomes readable, as a process's does

    def is_alive(self) -> bool:
        return False

    def join(self) -> None:
        os.close(self.sentinel)


def test_a_stop_signal_landing_just_before_the_wait_is_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SIGTERM's handler runs between any two lines of the loop. It used to close the dealer's
    # listening socket itself, and landing after the loop had listed what to wait on, it made
    # wait() fail on a closed socket: the supervisor died with a traceback and exit status 1.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    dealer = Dealer(listener, backlog=8)
    dealer.listening = True
    listener.listen(8)
    supervisor = Supervisor("127.0.0.1", listener.getsockname()[1], 1, 5.0, {}, dealer)
    worker = StandInWorker()
    monkeypatch.setattr(supervisor, "start", lambda slot: supervisor.slots.__setitem__(0, worker))
    calls = 0

    def wait(objects: list[Any], timeout: float | None = None) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            assert listener in objects  # listed while serving …
            supervisor.stop(signal.SIGTERM, None)  # … then the signal lands
            worker.exit()
        return connection.wait(objects, timeout)

    monkeypatch.setattr(workers, "wait", wait)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert supervisor.run() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert dealer.closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", supervisor.port), timeout=5)
