"""`python -m app` as a real process: graceful shutdown and exit status, connection and body
timeouts, clients that hang up.

Requests are held at known points without sleeping: `Expect: 100-continue` makes the server
answer "100 Continue" once the app starts reading the body, so the test knows the request was
accepted before it sends SIGTERM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from app_support import png
from live_server import (
    PYTHON_M_APP,
    Server,
    closed_by_peer,
    finish_a_request_across_sigterm,
    multipart,
    poll,
    read_response,
    request_head,
)

pytestmark = pytest.mark.slow

@pytest.fixture
def start(checkpoint: Path) -> Iterator[Callable[..., Server]]:
    with ExitStack() as stack:

        def make(**env: str) -> Server:
            server = Server(checkpoint, PYTHON_M_APP, **{"CNN_SERVE_WORKERS": "1", **env})
            stack.callback(server.close)
            server.wait_healthy()
            return server

        yield make


@pytest.fixture(scope="module")
def impatient(checkpoint: Path) -> Iterator[Server]:
    """One server for the timeout tests, with short header and body timeouts."""
    server = Server(checkpoint, PYTHON_M_APP, CNN_SERVE_WORKERS="1",
                    CNN_SERVE_HEADER_TIMEOUT_S="0.3", CNN_SERVE_BODY_TIMEOUT_S="1")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.close()


def predict(server: Server, data: bytes | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", files={"file": ("x.png", data or png())},
                      headers={"Connection": "close"}, timeout=30)


def test_sigterm_lets_an_accepted_request_finish_refuses_new_ones_and_exits_0(
    start: Callable[..., Server],
) -> None:
    server = start()
    finish_a_request_across_sigterm(server)
    assert '"message":"stopped"' in server.drain_log()  # the lifespan's shutdown ran


def test_headers_that_trickle_in_are_cut_off_with_408(impatient: Server) -> None:
    server = impatient
    with server.connect() as slow, server.connect() as idle:
        slow.sendall(b"POST /predict HTTP/1.1\r\nHost: te")
        assert predict(server).status_code == 200  # others are served meanwhile
        status, headers, _ = read_response(slow)
        assert status == 408 and headers["connection"] == "close"
        assert closed_by_peer(slow)
        assert closed_by_peer(idle)  # a connection that never sent a byte is closed too


def test_a_body_that_trickles_in_gets_408_and_the_connection_closed(impatient: Server) -> None:
    server = impatient
    body, content_type = multipart(png())
    with server.connect() as sock:
        sock.sendall(request_head("/predict", len(body), content_type) + body[:10])
        assert predict(server).status_code == 200
        status, headers, answer = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert "did not arrive within 1 s" in json.loads(answer)["detail"]
        assert closed_by_peer(sock)
    log = server.drain_log()
    assert '"status":408' in log


def test_a_client_hanging_up_mid_upload_is_logged_as_499_not_an_error(
    impatient: Server,
) -> None:
    server = impatient
    body, content_type = multipart(png())
    with server.connect() as sock:
        sock.sendall(request_head("/predict", len(body), content_type,
                                  "Expect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body[:20])

    def counted() -> bool:
        metrics = httpx.get(f"{server.url}/metrics").text
        return 'route="/predict",status="499"' in metrics

    poll(counted, 30, "a 499 in /metrics")
    assert "unhandled error" not in server.drain_log()
    assert predict(server).status_code == 200
