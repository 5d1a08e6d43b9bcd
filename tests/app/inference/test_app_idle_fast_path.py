"""The idle fast path: a lone small image is decoded and predicted on the event loop itself
when the process has nothing else to do (app/inference/service.py, app/inference/batching.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from app_support import ModelGate, encode, png
from fastapi.testclient import TestClient
from PIL import Image

from app.inference.service import INLINE_MAX_SIDE


@pytest.fixture
def fast(make_client: Callable[..., TestClient]) -> Iterator[tuple[TestClient, ModelGate]]:
    # A limit no model call misses, so the test does not depend on this machine's speed.
    client = make_client(inline_when_idle_max_ms=1000)
    gate = ModelGate(client.app.state.service.predictor.model)
    yield client, gate
    gate.remove()


def post(client: TestClient, data: bytes, name: str = "x.png"):
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")})


def on_the_loop(name: str) -> bool:
    return not name.startswith(("inference", "decode"))


def test_a_lone_small_image_is_predicted_on_the_event_loop_with_the_same_answer(
    fast: tuple[TestClient, ModelGate],
) -> None:
    client, gate = fast
    data = png((32, 32), (10, 200, 90))
    response = post(client, data)
    assert response.status_code == 200
    assert [on_the_loop(name) for name in gate.threads] == [True]
    predictor = client.app.state.service.predictor
    [expected] = predictor.predict([predictor.decode(data)])
    got = response.json()["probabilities"]
    assert [got[label] for label in predictor.classes] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("size", "loop"), [
    ((INLINE_MAX_SIDE, INLINE_MAX_SIDE), True),
    ((INLINE_MAX_SIDE + 1, INLINE_MAX_SIDE), False),
    ((400, 300), False),
])
def test_only_images_up_to_the_size_limit_take_the_fast_path(
    fast: tuple[TestClient, ModelGate], size: tuple[int, int], loop: bool,
) -> None:
    client, gate = fast
    assert post(client, png(size)).status_code == 200
    assert [on_the_loop(name) for name in gate.threads] == [loop]


def test_a_small_jpeg_takes_the_fast_path_too(fast: tuple[TestClient, ModelGate]) -> None:
    client, gate = fast
    data = encode(Image.new("RGB", (48, 48), (90, 20, 200)), "JPEG")
    assert post(client, data, "x.jpg").status_code == 200
    assert [on_the_loop(name) for name in gate.threads] == [True]


def test_a_damaged_small_image_gets_the_same_answer_on_either_path(
    make_client: Callable[..., TestClient],
) -> None:
    data = png((32, 32))
    damaged = data[:40] + bytes(b ^ 0x5A for b in data[40:-12]) + data[-12:]
    answers = [post(make_client(inline_when_idle_max_ms=limit), damaged)
               for limit in (1000, 0)]
    assert [a.status_code for a in answers] == [answers[1].status_code] * 2
    assert answers[0].status_code // 100 == 4
    assert answers[0].json()["detail"] == answers[1].json()["detail"]


def test_the_fast_path_is_off_for_a_model_slower_than_the_limit(
    make_client: Callable[..., TestClient], app_logs: list[logging.LogRecord],
) -> None:
    client = make_client(inline_when_idle_max_ms=1e-6)  # no model call is this fast
    gate = ModelGate(client.app.state.service.predictor.model)
    assert not client.app.state.service.inline_when_idle
    assert post(client, png((32, 32))).status_code == 200
    assert [on_the_loop(name) for name in gate.threads] == [False]
    [line] = [r.getMessage() for r in app_logs if "idle fast path" in r.getMessage()]
    assert line.startswith("idle fast path off: one 128×128 upload takes")


def test_zero_turns_the_fast_path_off_without_measuring(
    make_client: Callable[..., TestClient], app_logs: list[logging.LogRecord],
) -> None:
    client = make_client(inline_when_idle_max_ms=0)
    assert not client.app.state.service.inline_when_idle
    assert not [r for r in app_logs if "idle fast path" in r.getMessage()]


def test_the_startup_line_says_the_fast_path_is_on_and_what_was_measured(
    make_client: Callable[..., TestClient], app_logs: list[logging.LogRecord],
) -> None:
    client = make_client(inline_when_idle_max_ms=1000)
    assert client.app.state.service.inline_when_idle
    [line] = [r.getMessage() for r in app_logs if "idle fast path" in r.getMessage()]
    assert line.startswith("idle fast path on: one 128×128 upload takes")
    assert line.endswith("the limit is 1000 ms (CNN_SERVE_INLINE_WHEN_IDLE_MAX_MS)")
