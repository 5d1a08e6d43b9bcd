"""Request context (X-Request-ID, access log, last-resort 500) and the upload guard
(byte limits enforced before and while the body streams in)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from app_support import png, settings_for
from fastapi.testclient import TestClient

from app.http.errors import PayloadTooLargeError
from app.http.middleware import MULTIPART_SLACK, UploadGuardMiddleware
from app.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- upload guard, as plain ASGI ---------------------------------------------------------------

class BodyReader:
    """An inner app that reads the whole body, as the multipart parser does."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def guarded_scope(settings: Settings, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers,
        "query_string": b"", "app": SimpleNamespace(state=SimpleNamespace(settings=settings)),
    }


async def run_guard(
    settings: Settings, path: str, chunks: int, chunk_size: int,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, int, bytes]:
    """Feed `chunks` chunks to the guarded app; return (status, chunks pulled, body)."""
    inner = BodyReader()
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\0" * chunk_size, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = guarded_scope(settings, path, headers or [])
    await UploadGuardMiddleware(inner)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], pulled, body


async def test_streamed_body_over_the_limit_stops_being_read(checkpoint) -> None:
    settings = settings_for(checkpoint, max_upload_bytes=100_000)
    # 30 MB in 64 KiB chunks, no Content-Length: reading stops just past the limit.
    status, pulled, body = await run_guard(settings, "/predict", chunks=480, chunk_size=65536)
    assert status == 413
    assert b"100,000-byte limit per image" in body
    assert pulled * 65536 <= 100_000 + MULTIPART_SLACK + 65536


async def test_declared_content_length_over_the_limit_is_refused_unread(checkpoint) -> None:
    settings = settings_for(checkpoint, max_upload_bytes=100_000)
    headers = [(b"content-length", b"31457280")]
    status, pulled, _ = await run_guard(settings, "/predict", 480, 65536, headers)
    assert (status, pulled) == (413, 0)


async def test_body_within_the_limit_passes_whole(checkpoint) -> None:
    settings = settings_for(checkpoint, max_upload_bytes=100_000)
    status, pulled, body = await run_guard(settings, "/predict", chunks=10, chunk_size=10_000)
    assert (status, pulled, body) == (200, 10, b"ok")


async def test_batch_route_has_its_own_whole_body_limit(checkpoint) -> None:
    settings = settings_for(checkpoint, max_upload_bytes=100_000, max_batch_bytes=500_000)
    assert (await run_guard(settings, "/predict/batch", 40, 10_000))[0] == 200
    status, _, body = await run_guard(settings, "/predict/batch", 60, 10_000)
    assert status == 413 and b"500,000-byte limit for a whole /predict/batch" in body


async def test_limit_hit_after_the_response_started_is_not_swallowed(checkpoint) -> None:
    async def answers_then_reads(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    async def receive() -> dict:
        return {"type": "http.request", "body": b"\0" * 65536, "more_body": True}

    async def send(message: dict) -> None:
        pass

    settings = settings_for(checkpoint, max_upload_bytes=1000)
    scope = guarded_scope(settings, "/predict", [])
    with pytest.raises(PayloadTooLargeError):
        await asyncio.wait_for(UploadGuardMiddleware(answers_then_reads)(scope, receive, send), 5)


async def guard_with(settings: Settings, inner: Callable, receive: Callable) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = guarded_scope(settings, "/predict", [])
    await asyncio.wait_for(UploadGuardMiddleware(inner)(scope, receive, send), 10)
    return sent


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(checkpoint) -> None:
    stalled = asyncio.Event()  # never set: the client went quiet

    async def receive() -> dict:
        if not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b"--boundary\r\n", "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sent = await guard_with(settings_for(checkpoint, body_timeout_s=0.05), BodyReader(), receive)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"did not arrive within 0.05 s" in sent[1]["body"]


async def test_once_the_body_is_in_waiting_for_a_disconnect_has_no_deadline(checkpoint) -> None:
    """After the body, the routes await receive() to notice a client hanging up while the
    model runs (app/http/disconnect.py); that wait may outlast the body timeout."""
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"all of it", "more_body": False}
        await asyncio.sleep(0.05)  # longer than the body timeout below
        return {"type": "http.disconnect"}

    async def reads_then_waits(scope: dict, receive: Callable, send: Callable) -> None:
        assert (await receive())["body"] == b"all of it"
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent = await guard_with(settings_for(checkpoint, body_timeout_s=0.01), reads_then_waits,
                            receive)
    assert sent[0]["status"] == 204


# --- through the whole app ---------------------------------------------------------------------

def test_streamed_upload_over_the_limit_gets_413_json(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=50_000)

    def body():  # no Content-Length: httpx sends it chunked
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the upload is larger than the 50,000-byte limit per image; "
                  "send a smaller image"
    }


def test_file_just_over_the_limit_inside_the_slack_is_413(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=10_000)
    response = client.post("/predict", files={"file": ("x.png", b"\x89PNG" + b"\0" * 10_000)})
    assert response.status_code == 413
    assert "10,004 bytes, over the 10,000-byte limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("GET", "/no/such/page", {}, 404),
        ("POST", "/predict", {}, 422),
        ("POST", "/predict", {"files": {"file": ("x.png", b"junk")}}, 415),
        ("POST", "/predict", {"files": {"file": ("x.png", png())}}, 200),
        ("DELETE", "/predict", {}, 405),
    ],
)
def test_every_response_carries_a_request_id(
    client: TestClient, method: str, path: str, kwargs: dict, status: int
) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status
    assert len(response.headers["x-request-id"]) == 32
    echoed = client.request(method, path, headers={"X-Request-ID": "abc-123"}, **kwargs)
    assert echoed.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("given", ["has space", "x" * 129, "new\\nline", ""])
def test_unsafe_client_request_id_is_replaced(client: TestClient, given: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


def test_one_structured_access_log_line_per_request(
    client: TestClient, app_logs: list[logging.LogRecord]
) -> None:
    client.post("/predict", files={"file": ("x.png", png())}, headers={"X-Request-ID": "r1"})
    lines = [r for r in app_logs if r.name == "app.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.request_id, line.method, line.route, line.status) == ("r1", "POST", "/predict",
                                                                        200)
    assert line.latency_ms > 0


def test_unhandled_error_is_a_json_500_logged_with_the_request_id(
    checkpoint, app_logs: list[logging.LogRecord]
) -> None:
    from app.main import create_app

    app = create_app(settings_for(checkpoint))

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("a bug")

    with TestClient(app) as client:
        response = client.get("/boom", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal server error; quote request id bug-1", "request_id": "bug-1"
    }
    assert response.headers["x-request-id"] == "bug-1"
    [record] = [r for r in app_logs if r.exc_info]
    assert record.request_id == "bug-1" and isinstance(record.exc_info[1], KeyError)
