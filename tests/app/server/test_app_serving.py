"""`python -m app` as a real process: graceful shutdown and exit status, connection and body
timeouts, clients that hang up, and a failed inference worker ending the process.

Requests are held at known points without sleeping: `Expect: 100-continue` makes the server
answer "100 Continue" once the app starts reading the body, so the test knows the request was
accepted before it sends SIGTERM.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from app_support import png
from live_server import (
    PYTHON_M_APP,
    REPO,
    Server,
    closed_by_peer,
    finish_a_request_across_sigterm,
    multipart,
    poll,
    read_response,
    request_head,
)
from PIL import Image

pytestmark = pytest.mark.slow

FAULTS = str(REPO / "tests" / "app" / "faults")


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
    # The access-log line is written after the response has gone out: wait for it.
    server.wait_for_log('"status":408', timeout=10)


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


def image_with_corner(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, "PNG")
    return buf.getvalue()


# The inference thread's faults: the idle fast path (a lone small image run on the event
# loop) is off for these, or the fault would hit the event loop instead.
BATCHER_ONLY = {"CNN_SERVE_INLINE_WHEN_IDLE_MAX_MS": "0"}


def test_a_hung_inference_worker_makes_the_process_exit_70(
    start: Callable[..., Server],
) -> None:
    server = start(PYTHONPATH=FAULTS, CNN_SERVE_REQUEST_TIMEOUT_S="0.2", **BATCHER_ONLY)
    assert predict(server, image_with_corner((1, 2, 3))).status_code == 504
    assert server.proc.wait(60) == 70
    server.pump.join(10)
    log = server.drain_log()
    assert "stuck on one batch" in log and "exiting with code 70" in log


def test_a_model_call_hung_on_the_idle_fast_path_still_ends_the_process_with_70(
    start: Callable[..., Server],
) -> None:
    # On the event loop nothing can time the request out (no 504: its connection is
    # dropped), but the watchdog thread sees the stuck call after a second and ends the
    # process at once: with the loop held, a graceful shutdown could not run anyway.
    server = start(PYTHONPATH=FAULTS, CNN_SERVE_REQUEST_TIMEOUT_S="0.2",
                   CNN_SERVE_SHUTDOWN_TIMEOUT_S="1", CNN_SERVE_INLINE_WHEN_IDLE_MAX_MS="1000")
    with pytest.raises(httpx.TransportError):
        predict(server, image_with_corner((1, 2, 3)))
    assert server.proc.wait(60) == 70
    server.pump.join(10)
    log = server.drain_log()
    assert "idle fast path on" in log and "event loop has been stuck in one model call" in log
    assert "exiting now" in log and "graceful shutdown did not finish" not in log


def test_a_crashed_inference_worker_is_replaced_by_the_supervisor(
    start: Callable[..., Server],
) -> None:
    server = start(PYTHONPATH=FAULTS, CNN_SERVE_WORKERS="2", **BATCHER_ONLY)
    server.wait_for_log("ready: serving", count=2)
    response = predict(server, image_with_corner((3, 2, 1)))
    assert response.status_code == 503
    assert "crashed" in response.json()["detail"]
    server.wait_for_log("exited with 70; starting a new one")
    server.wait_for_log("ready: serving", count=3)
    assert server.proc.poll() is None  # the supervisor carried on
    assert [predict(server).status_code for _ in range(4)] == [200] * 4
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0


def test_sustained_mixed_load_is_all_200_with_flat_memory(
    start: Callable[..., Server],
) -> None:
    # The short version of bench/soak.py's sustained scenario: 16 keep-alive connections of
    # tiny PNGs and photo-sized ones. A per-request leak of even one decoded photo (~400 KiB)
    # would add ~60 MiB over the measured requests.
    server = start()
    buffer = io.BytesIO()
    Image.effect_noise((450, 340), 60).convert("RGB").save(buffer, "PNG")
    uploads = [png(), buffer.getvalue()]

    def rss_mib() -> float:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    def load(requests_per_connection: int) -> list[int]:
        def connection(k: int) -> list[int]:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return [client.post("/predict", files={"file": ("x.png", uploads[(k + i) % 2])})
                        .status_code for i in range(requests_per_connection)]

        with ThreadPoolExecutor(16) as pool:
            return [s for statuses in pool.map(connection, range(16)) for s in statuses]

    assert set(load(10)) == {200}  # warm-up: thread pools, allocator arenas, caches
    before = rss_mib()
    statuses = load(20)
    assert statuses == [200] * 320
    assert rss_mib() - before < 24
