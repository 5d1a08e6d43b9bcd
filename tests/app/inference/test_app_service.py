"""The inference path under concurrency, through HTTP: batching, overload, timeouts,
disconnects, model failures and a stopped worker.

A forward pre-hook (`ModelGate`) holds the network so each test controls what is queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from app_support import ModelGate, encode, png, wait_until
from fastapi.testclient import TestClient
from PIL import Image

import app.settings as settings_module
from app.inference.service import InferenceService


def post(client: TestClient, data: bytes | None = None):
    return client.post("/predict", files={"file": ("x.png", data or png(), "image/png")})


def service_of(client: TestClient) -> InferenceService:
    return client.app.state.service


def test_concurrent_requests_share_a_forward_pass(client: TestClient, gate: ModelGate) -> None:
    service = service_of(client)
    gate.close()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(post, client)
        wait_until(gate.entered.is_set, what="the first request to reach the model")
        rest = [pool.submit(post, client) for _ in range(5)]
        wait_until(lambda: service.batcher.queued == 5, what="five queued requests")
        gate.open()
        assert [f.result().status_code for f in [first, *rest]] == [200] * 6
    assert gate.sizes == [1, 5]
    metrics = client.get("/metrics").text
    assert "cnn_serve_batch_size_count 2.0" in metrics
    assert "cnn_serve_batch_size_sum 6.0" in metrics


def test_overload_gets_503_with_retry_after_at_once_and_admitted_requests_finish(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(queue_capacity=2, retry_after_s=3)
    service = service_of(client)
    gate = ModelGate(service.predictor.model)
    gate.close()
    with ThreadPoolExecutor(2) as pool:
        admitted = [pool.submit(post, client) for _ in range(2)]
        wait_until(lambda: service.batcher.admitted == 2, what="two admitted requests")
        rejected = post(client)  # answered while the model is still held: no hang
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "3"
        assert "queue is full" in rejected.json()["detail"]
        assert client.get("/healthz").status_code == 200  # busy is not unhealthy
        gate.open()
        assert [f.result().status_code for f in admitted] == [200, 200]
    assert post(client).status_code == 200  # and it recovers on its own
    gate.remove()


def test_while_the_queue_is_full_uploads_are_refused_before_their_body_is_read(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(queue_capacity=1, retry_after_s=2)
    service = service_of(client)
    gate = ModelGate(service.predictor.model)
    gate.close()
    body, scope = _predict_request(png())
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    with ThreadPoolExecutor(1) as pool:
        admitted = pool.submit(post, client)
        wait_until(lambda: service.batcher.admitted == 1, what="the queue to fill")
        client.portal.call(client.app, scope, receive, send)
        assert client.get("/healthz").status_code == 200  # busy is not unhealthy
        gate.open()
        assert admitted.result().status_code == 200
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"2") in sent[0]["headers"]
    assert b"queue is full" in sent[1]["body"]
    gate.remove()


def test_batch_request_larger_than_the_queue_is_refused_whole(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(queue_capacity=2)
    files = [("files", (f"{i}.png", png(), "image/png")) for i in range(3)]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 503
    assert service_of(client).batcher.admitted == 0


def test_request_past_its_timeout_gets_504_and_frees_its_slot(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(request_timeout_s=0.2)
    service = service_of(client)
    gate = ModelGate(service.predictor.model)
    gate.close()
    response = post(client)
    assert response.status_code == 504
    assert "0.2 s request timeout" in response.json()["detail"]
    assert service.batcher.admitted == 0
    gate.open()
    assert post(client).status_code == 200
    gate.remove()


def test_healthz_turns_503_while_the_worker_is_stuck_and_recovers(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(request_timeout_s=0.05)  # stuck after 2 × timeout on one batch
    gate = ModelGate(service_of(client).predictor.model)
    gate.close()
    assert post(client).status_code == 504
    wait_until(lambda: client.get("/healthz").status_code == 503, what="healthz to turn 503")
    assert "stuck on one batch" in client.get("/healthz").json()["detail"]
    gate.open()
    wait_until(lambda: client.get("/healthz").status_code == 200, what="healthz to recover")
    gate.remove()


def test_stopped_worker_makes_healthz_and_predict_503(client: TestClient) -> None:
    service = service_of(client)
    client.portal.call(service.batcher.stop)
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {
        "status": "unavailable", "detail": "the inference worker is stopped (shutting down)"
    }
    response = post(client)
    assert response.status_code == 503
    assert "cannot predict now" in response.json()["detail"]


def test_model_failure_is_a_500_with_the_request_id_logged(
    client: TestClient, gate: ModelGate, app_logs: list[logging.LogRecord]
) -> None:
    gate.fail_with = RuntimeError("out of memory")
    response = client.post(
        "/predict", files={"file": ("x.png", png(), "image/png")},
        headers={"X-Request-ID": "req-42"},
    )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-42"
    assert response.json()["request_id"] == "req-42"
    assert "quote request id req-42" in response.json()["detail"]
    assert any(r.levelno == logging.ERROR and getattr(r, "request_id", None) == "req-42"
               for r in app_logs)
    assert any(r.exc_info and "out of memory" in str(r.exc_info[1]) for r in app_logs)
    gate.fail_with = None
    assert post(client).status_code == 200


def _predict_request(data: bytes) -> tuple[bytes, dict]:
    """A multipart body uploading `data`, and the ASGI scope of a POST /predict carrying it,
    for tests that drive the app directly (to hang up, or to see whether the body is read)."""
    boundary = b"testboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="x.png"\r\nContent-Type: image/png\r\n\r\n' + data
            + b"\r\n--" + boundary + b"--\r\n")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {},
    }
    return body, scope


def test_client_disconnect_cancels_its_queued_work(client: TestClient, gate: ModelGate) -> None:
    """Drive the ASGI app directly in its own event loop so the test can hang up."""
    service = service_of(client)
    body, scope = _predict_request(png())
    sent: list[dict] = []

    async def hang_up_while_queued() -> None:
        hung_up = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        request = asyncio.ensure_future(client.app(scope, receive, send))
        while service.batcher.queued < 1:
            await asyncio.sleep(0.001)
        hung_up.set()
        await asyncio.wait_for(request, 5)

    gate.close()
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(post, client)  # occupies the model
        wait_until(gate.entered.is_set, what="the first request to reach the model")
        client.portal.call(hang_up_while_queued)
        assert service.batcher.admitted == 1  # only the holder is left
        gate.open()
        assert holder.result().status_code == 200
    assert gate.sizes == [1]  # the abandoned image never reached the model
    assert sent[0]["status"] == 499
    assert 'route="/predict",status="499"' in client.get("/metrics").text


def test_client_hanging_up_mid_upload_is_a_499_not_an_error(
    client: TestClient, app_logs: list[logging.LogRecord]
) -> None:
    body, scope = _predict_request(png())
    messages = [{"type": "http.disconnect"},
                {"type": "http.request", "body": body[:40], "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop()

    async def send(message: dict) -> None:
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)
    assert sent[0]["status"] == 499
    assert not [r for r in app_logs if r.levelno >= logging.ERROR]
    assert 'route="/predict",status="499"' in client.get("/metrics").text


@pytest.mark.parametrize("n", [1, 7])
def test_admission_is_released_after_every_request(client: TestClient, n: int) -> None:
    files = [("files", (f"{i}.png", png(), "image/png")) for i in range(n)]
    assert client.post("/predict/batch", files=files).status_code == 200
    assert client.post("/predict/batch", files=[("files", ("bad.png", b"x", "image/png"))]) \
        .status_code == 415
    assert service_of(client).batcher.admitted == 0


def _decoding_threads(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that decode, recorded by a wrapper on this app's predictor."""
    predictor = service_of(client).predictor
    names: list[str] = []
    decode = predictor.decode

    def recording_decode(data: bytes) -> torch.Tensor:
        names.append(threading.current_thread().name)
        return decode(data)

    monkeypatch.setattr(predictor, "decode", recording_decode)
    return names


@pytest.mark.parametrize(
    ("inline_max", "expected"),
    [(10**6, "inference"), (0, "decode")],
    ids=["small-in-the-inference-thread", "large-in-the-decode-pool"],
)
def test_uploads_are_decoded_inline_or_in_the_pool_by_size(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch,
    inline_max: int, expected: str,
) -> None:
    client = make_client(inline_decode_max_bytes=inline_max)
    names = _decoding_threads(client, monkeypatch)
    files = [("files", (f"{i}.png", png(color=(i, 9, 9)), "image/png")) for i in range(3)]
    assert client.post("/predict/batch", files=files).status_code == 200
    assert len(names) == 3 and all(n.startswith(expected) for n in names), names


@pytest.mark.parametrize(("workers", "expected"), [(None, "inference"), (1, "decode")],
                         ids=["a-worker-per-cpu", "cores-to-spare"])
def test_a_photo_sized_upload_is_decoded_where_the_default_says(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch,
    workers: int | None, expected: str,
) -> None:
    monkeypatch.setattr(settings_module, "available_cpus", lambda: 2)
    client = make_client(device="cpu", workers=workers)
    names = _decoding_threads(client, monkeypatch)
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    photo = encode(Image.fromarray(noise), "PNG")
    assert len(photo) > 32 * 1024  # over the 32 KiB the other case keeps for the pool
    assert client.post("/predict", files={"file": ("p.png", photo, "image/png")}) \
        .status_code == 200
    assert len(names) == 1 and names[0].startswith(expected), names


@pytest.mark.parametrize("inline_max", [10**6, 0])
def test_a_bad_image_is_named_wherever_it_was_decoded(
    make_client: Callable[..., TestClient], inline_max: int
) -> None:
    client = make_client(inline_decode_max_bytes=inline_max)
    files = [("files", ("a.png", png(), "image/png")),
             ("files", ("b.png", png()[:-30], "image/png")),
             ("files", ("c.png", png(), "image/png"))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("files[1] (b.png): the PNG image is truncated")
    assert service_of(client).batcher.admitted == 0
