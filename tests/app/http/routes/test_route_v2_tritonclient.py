"""The Open Inference Protocol routes against a real server process (uvicorn), spoken to by the
real client: tritonclient's HTTP `InferenceServerClient`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from app_support import encode, png
from live_server import Server
from PIL import Image
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

KEY = "live-test-key"
MODEL = "random_cnn"


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[Server]:
    s = Server(checkpoint, CNN_SERVE_API_KEY=KEY)
    try:
        s.wait_healthy()
        yield s
    finally:
        s.close()


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def image_input(data: bytes, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    # JSON carries BYTES as UTF-8 strings, which a PNG is not: send it as base64 there.
    element = data if binary else base64.b64encode(data)
    tensor.set_data_from_numpy(np.array([element], dtype=np.object_), binary_data=binary)
    return tensor


def outputs(binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary)
            for name in ("probabilities", "class")]


def predict(server: Server, data: bytes) -> dict:
    response = httpx.post(f"{server.url}/predict", files={"file": ("x.png", data)},
                          headers={"X-API-Key": KEY})
    assert response.status_code == 200
    return response.json()


def test_tritonclient_sees_a_live_ready_server_and_the_model_metadata(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("other")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "pytorch" and len(metadata["versions"][0]) == 12
    assert [i["name"] for i in metadata["inputs"]] == ["image", "pixels"]
    assert client.get_model_metadata(MODEL, model_version=metadata["versions"][0])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_inference_gives_what_predict_gives(
    server: Server, client: triton.InferenceServerClient, binary: bool
) -> None:
    data = encode(Image.effect_mandelbrot((48, 40), (-2, -1.2, 1, 1.2), 30).convert("RGB"), "PNG")
    expected = predict(server, data)
    result = client.infer(MODEL, [image_input(data, binary)], outputs=outputs(binary),
                          request_id="live-1", headers={"X-API-Key": KEY})
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 10)
    assert probabilities[0].tolist() == pytest.approx(list(expected["probabilities"].values()),
                                                      abs=1e-6)
    [name] = result.as_numpy("class").tolist()
    assert (name.decode() if binary else name) == expected["class"]
    response = result.get_response()
    assert response["id"] == "live-1" and response["model_name"] == MODEL


def test_tritonclient_without_outputs_gets_all_of_them_in_binary(
    client: triton.InferenceServerClient,
) -> None:
    result = client.infer(MODEL, [image_input(png(), binary=True)], headers={"X-API-Key": KEY})
    assert result.as_numpy("probabilities").shape == (1, 10)
    assert result.as_numpy("class").shape == (1,)


def test_tritonclient_uint8_pixels_give_what_predict_gives_for_their_png(
    server: Server, client: triton.InferenceServerClient,
) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = predict(server, encode(Image.fromarray(pixels), "PNG"))
    tensor = triton.InferInput("pixels", [1, 3, 32, 32], "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)[None]))
    result = client.infer(MODEL, [tensor], headers={"X-API-Key": KEY})
    assert result.as_numpy("probabilities")[0].tolist() == pytest.approx(
        list(expected["probabilities"].values()), abs=1e-6)


def test_tritonclient_gets_400_for_a_bad_image(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [image_input(b"not an image", binary=True)],
                     headers={"X-API-Key": KEY})
    assert caught.value.status() == "400"
    assert "image[0]: not an image" in caught.value.message()


def test_tritonclient_gets_404_for_an_unknown_model(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("other", [image_input(png(), binary=True)], headers={"X-API-Key": KEY})
    assert caught.value.status() == "404"
    assert "no model named 'other'" in caught.value.message()


def test_tritonclient_without_the_key_gets_401(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [image_input(png(), binary=True)])
    assert caught.value.status() == "401"
    assert "API key" in caught.value.message()
