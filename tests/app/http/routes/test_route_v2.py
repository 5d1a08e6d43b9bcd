"""The Open Inference Protocol routes (/v2): metadata, health, inference in JSON and binary, the
error matrix with `{"error": ...}` bodies, the API key and the service's limits."""

from __future__ import annotations

import base64
import os
import shutil
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from app_support import (
    FIXED_PROBABILITIES,
    ModelGate,
    encode,
    png,
    png_header_only,
    save_random_checkpoint,
    settings_for,
    wait_until,
)
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from models.classes import CIFAR10_CLASSES

INFER = "/v2/models/random_cnn/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"


def image_input(*images: bytes, shape: list[int] | None = None) -> dict:
    return {"name": "image", "datatype": "BYTES", "shape": shape or [len(images)],
            "data": [base64.b64encode(data).decode() for data in images]}


def pixels_input(datatype: str, shape: list[int], value: float) -> dict:
    return {"name": "pixels", "datatype": datatype, "shape": shape,
            "data": [value] * int(np.prod(shape))}


def infer_json(client: TestClient, inputs: list[dict], path: str = INFER, **request: object):
    return client.post(path, content=orjson.dumps({"inputs": inputs, **request}))


def binary_request(header: dict, *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), {HEADER_LENGTH: str(len(head))}


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def outputs_of(body: dict) -> dict[str, dict]:
    return {output["name"]: output for output in body["outputs"]}


def predict_probabilities(client: TestClient, data: bytes) -> list[float]:
    response = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    return list(response.json()["probabilities"].values())


def random_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


# --- metadata and health -----------------------------------------------------------------------

def test_server_metadata_names_the_server_and_the_binary_extension(client: TestClient) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    assert response.json() == {"name": "cnn-serve", "version": "0.1.0",
                               "extensions": ["binary_tensor_data"]}


def test_live_and_ready_are_200_while_serving(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/random_cnn/ready").json() == {"name": "random_cnn",
                                                                "ready": True}


def test_ready_is_503_with_the_reason_before_startup_and_live_stays_200(
    checkpoint: Path,
) -> None:
    unstarted = TestClient(create_app(settings_for(checkpoint)))  # the lifespan has not run
    response = unstarted.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "error": "the model is not loaded"}
    assert unstarted.get("/v2/health/live").status_code == 200
    early = infer_json(unstarted, [image_input(png())])
    assert early.status_code == 503 and early.headers["retry-after"] == "1"
    assert early.json() == {"error": "cannot predict now: the model is not loaded"}


def test_ready_turns_503_while_the_worker_is_stuck(make_client: Callable[..., TestClient]) -> None:
    client = make_client(request_timeout_s=0.05)  # stuck after 2 × timeout on one batch
    gate = ModelGate(client.app.state.service.predictor.model)
    gate.close()
    try:
        assert infer_json(client, [image_input(png())]).status_code == 504
        wait_until(lambda: client.get("/v2/health/ready").status_code == 503, what="not ready")
        assert "stuck on one batch" in client.get("/v2/health/ready").json()["error"]
        assert client.get("/v2/health/live").status_code == 503  # so a kubelet restarts it
    finally:
        gate.remove()


def test_model_metadata_describes_the_inputs_and_outputs(client: TestClient) -> None:
    response = client.get("/v2/models/random_cnn")
    assert response.status_code == 200
    assert response.json() == {
        "name": "random_cnn",
        "versions": [client.app.state.service.predictor.sha256[:12]],
        "platform": "pytorch",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                   {"name": "pixels", "datatype": "UINT8", "shape": [-1, 3, 32, 32]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                    {"name": "class", "datatype": "BYTES", "shape": [-1]}],
    }


@pytest.mark.parametrize("length", [12, 64])
def test_a_version_is_the_sha256_in_full_or_its_12_digit_prefix(
    client: TestClient, length: int
) -> None:
    sha = client.app.state.service.predictor.sha256
    version = sha[:length]
    base = f"/v2/models/random_cnn/versions/{version}"
    assert client.get(base).json()["versions"] == [sha[:12]]
    assert client.get(f"{base}/ready").json()["ready"] is True
    response = infer_json(client, [image_input(png())], path=f"{base}/infer")
    assert response.status_code == 200
    assert response.json()["model_version"] == sha[:12]


@pytest.mark.parametrize("path", [
    "/v2/models/other", "/v2/models/other/ready", "/v2/models/random_cnn/versions/abc",
    "/v2/models/random_cnn/versions/abc/ready",
])
def test_unknown_model_or_version_is_404_with_an_error_body(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"} and "random_cnn" in response.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/other/infer",
                                  "/v2/models/random_cnn/versions/abc/infer"])
def test_inference_on_an_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    response = infer_json(client, [image_input(png())], path=path)
    assert response.status_code == 404 and "error" in response.json()


def test_unrouted_v2_paths_and_methods_get_error_bodies(client: TestClient) -> None:
    missing = client.get("/v2/repository/index")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong_method = client.get(INFER)
    assert wrong_method.status_code == 405 and wrong_method.json() == {
        "error": "Method Not Allowed"}
    assert client.get("/nope").json() == {"detail": "Not Found"}  # the rest of the app keeps its


# --- inference ---------------------------------------------------------------------------------

def test_json_inference_gives_what_predict_gives_for_the_same_bytes(client: TestClient) -> None:
    data = encode(Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 40).convert("RGB"), "PNG")
    response = infer_json(client, [image_input(data)], id="req-7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["id"]) == ("random_cnn", "req-7")
    assert body["model_version"] == client.app.state.service.predictor.sha256[:12]
    outputs = outputs_of(body)
    expected = predict_probabilities(client, data)
    assert outputs["probabilities"]["shape"] == [1, 10]
    assert outputs["probabilities"]["data"] == pytest.approx(expected, abs=1e-6)
    assert outputs["class"] == {"name": "class", "datatype": "BYTES", "shape": [1],
                                "data": [CIFAR10_CLASSES[int(np.argmax(expected))]]}


def test_fixed_model_gives_the_hand_computed_probabilities(
    make_client: Callable[..., TestClient], fixed_checkpoint: Path
) -> None:
    client = make_client(fixed_checkpoint)
    inputs = [image_input(png(), png((8, 8)), shape=[2, 1])]
    response = infer_json(client, inputs, path="/v2/models/fixed_cnn/infer")
    outputs = outputs_of(response.json())
    assert outputs["probabilities"]["shape"] == [2, 10]
    assert outputs["probabilities"]["data"] == pytest.approx(FIXED_PROBABILITIES * 2, abs=1e-6)
    assert outputs["class"]["data"] == ["truck", "truck"]


def test_binary_request_and_outputs_round_trip_with_the_header_length(
    make_client: Callable[..., TestClient], fixed_checkpoint: Path
) -> None:
    client = make_client(fixed_checkpoint)
    images = length_prefixed(png(), png((20, 20)))
    body, headers = binary_request({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": len(images)}}],
        "parameters": {"binary_data_output": True},
    }, images)
    response = client.post("/v2/models/fixed_cnn/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER_LENGTH])
    header, binary = orjson.loads(response.content[:length]), response.content[length:]
    probabilities, classes = header["outputs"]
    assert probabilities["parameters"] == {"binary_data_size": 2 * 10 * 4}
    values = np.frombuffer(binary[:80], "<f4").tolist()
    assert values == pytest.approx(FIXED_PROBABILITIES * 2, abs=1e-6)
    assert binary[80:] == length_prefixed(b"truck", b"truck")
    assert classes["parameters"] == {"binary_data_size": len(binary) - 80}


def test_only_the_requested_outputs_come_back_each_as_it_asked(client: TestClient) -> None:
    response = infer_json(client, [image_input(png())], outputs=[
        {"name": "class", "parameters": {"binary_data": True}},
    ])
    length = int(response.headers[HEADER_LENGTH])
    header = orjson.loads(response.content[:length])
    assert [o["name"] for o in header["outputs"]] == ["class"]
    assert response.content[length + 4:].decode() in CIFAR10_CLASSES
    json_only = infer_json(client, [image_input(png())], outputs=[{"name": "probabilities"}],
                           parameters={"binary_data_output": False})
    assert HEADER_LENGTH.lower() not in json_only.headers
    assert [o["name"] for o in json_only.json()["outputs"]] == ["probabilities"]


def test_uint8_pixels_give_what_predict_gives_for_a_png_of_them(client: TestClient) -> None:
    pixels = random_pixels()
    expected = predict_probabilities(client, encode(Image.fromarray(pixels), "PNG"))
    chw = pixels.transpose(2, 0, 1)[None]  # [1, 3, 32, 32]
    json_body = infer_json(client, [{"name": "pixels", "datatype": "UINT8",
                                     "shape": [1, 3, 32, 32], "data": chw.tolist()}])
    assert outputs_of(json_body.json())["probabilities"]["data"] == pytest.approx(expected,
                                                                                 abs=1e-6)
    raw = chw.tobytes()
    body, headers = binary_request({"inputs": [{
        "name": "pixels", "datatype": "UINT8", "shape": [1, 3, 32, 32],
        "parameters": {"binary_data_size": len(raw)}}]}, raw)
    binary = client.post(INFER, content=body, headers=headers)
    assert outputs_of(binary.json())["probabilities"]["data"] == pytest.approx(expected, abs=1e-6)


def test_fp32_pixels_in_0_to_1_are_the_uint8_pixels_over_255(client: TestClient) -> None:
    chw = random_pixels(1).transpose(2, 0, 1)[None]
    as_uint8 = infer_json(client, [{"name": "pixels", "datatype": "UINT8",
                                    "shape": [1, 3, 32, 32], "data": chw.ravel().tolist()}])
    scaled = (chw / 255).astype(np.float32)
    as_fp32 = infer_json(client, [{"name": "pixels", "datatype": "FP32",
                                   "shape": [1, 3, 32, 32], "data": scaled.ravel().tolist()}])
    assert as_fp32.status_code == 200
    assert as_fp32.json()["outputs"] == as_uint8.json()["outputs"]


def test_pixels_skip_the_decoder_even_when_every_upload_goes_to_the_decode_threads(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(inline_decode_max_bytes=0)
    response = infer_json(client, [pixels_input("UINT8", [2, 3, 32, 32], 7)])
    assert response.status_code == 200
    assert outputs_of(response.json())["probabilities"]["shape"] == [2, 10]


def test_one_request_of_several_images_is_one_forward_pass_on_the_inference_thread(
    client: TestClient, gate: ModelGate
) -> None:
    response = infer_json(client, [image_input(png(), png(), png())])
    assert response.status_code == 200
    assert gate.sizes == [3] and gate.threads[0].startswith("inference")


def test_inference_is_counted_in_the_metrics_under_its_route(client: TestClient) -> None:
    assert infer_json(client, [image_input(png(), png())]).status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    ok = (("method", "POST"), ("route", "/v2/models/{name}/infer"), ("status", "200"))
    assert samples[("cnn_serve_http_requests_total", ok)] == 1
    assert sum(v for (name, _), v in samples.items()
               if name == "cnn_serve_predictions_total") == 2
    assert samples[("cnn_serve_batch_size_sum", ())] == 2


# --- across a model reload (app/reload.py) -----------------------------------------------------

@pytest.fixture
def served(tmp_path: Path, checkpoint: Path) -> Path:
    """MODEL_PATH, holding the session's random checkpoint to begin with."""
    path = tmp_path / "served" / "random_cnn.pt"
    path.parent.mkdir()
    shutil.copy(checkpoint, path)
    return path


def reload_with(client: TestClient, served: Path, seed: int) -> str:
    """Another checkpoint at MODEL_PATH, reloaded as SIGHUP would; its sha256."""
    staged = save_random_checkpoint(served.with_suffix(".staged"), seed=seed)
    os.replace(staged, served)
    assert client.portal.call(client.app.state.reloader.reload) is True
    return client.app.state.service.predictor.sha256


def test_after_a_reload_the_routes_name_the_new_version_and_refuse_the_old(
    make_client: Callable[..., TestClient], served: Path,
) -> None:
    client = make_client(served)
    old = client.app.state.service.predictor.sha256[:12]
    new = reload_with(client, served, seed=1)[:12]
    assert client.get("/v2/models/random_cnn").json()["versions"] == [new]
    assert infer_json(client, [image_input(png())]).json()["model_version"] == new
    gone = infer_json(client, [image_input(png())],
                      path=f"/v2/models/random_cnn/versions/{old}/infer")
    assert gone.status_code == 404 and new in gone.json()["error"]


def test_the_openapi_document_names_the_version_served_now(
    make_client: Callable[..., TestClient], served: Path,
) -> None:
    path = "/v2/models/{name}/versions/{version}/infer"

    def example_version() -> str:
        operation = client.get("/openapi.json").json()["paths"][path]["post"]
        return {p["name"]: p for p in operation["parameters"]}["version"]["example"]

    client = make_client(served)
    old = example_version()
    assert old == client.app.state.service.predictor.sha256[:12] == example_version()
    new = reload_with(client, served, seed=2)[:12]
    assert new != old and example_version() == new


def test_a_request_split_across_a_reload_is_503_to_send_again(
    make_client: Callable[..., TestClient], served: Path,
) -> None:
    client = make_client(served, max_batch_size=1, retry_after_s=2)
    service = client.app.state.service
    gate = ModelGate(service.predictor.model)
    gate.close()
    try:
        with ThreadPoolExecutor(1) as pool:
            split = pool.submit(infer_json, client, [image_input(png(), png())])
            wait_until(gate.entered.is_set, what="the first image to reach the model")
            reload_with(client, served, seed=1)  # the second image runs on the new model
            gate.open()
            response = split.result()
    finally:
        gate.remove()
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert "reloaded while this request ran" in response.json()["error"]
    assert infer_json(client, [image_input(png(), png())]).status_code == 200


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("inputs", "request_fields", "status", "message"), [
    ([{"name": "tensor", "datatype": "BYTES", "shape": [1], "data": ["x"]}], {}, 400,
     "unknown input 'tensor'"),
    ([image_input(png()), image_input(png())], {}, 400, "exactly one input"),
    ([{**image_input(png()), "datatype": "UINT8"}], {}, 400, "must be BYTES of shape"),
    ([image_input(png(), png(), shape=[1, 2])], {}, 400, "shape [N] or [N, 1]"),
    ([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}], {}, 400,
     "must be base64"),
    ([image_input(b"not an image")], {}, 400, "image[0]: not an image"),
    ([image_input(png(), png()[:60])], {}, 400, "image[1]: "),
    ([image_input(b"")], {}, 400, "image[0]: "),
    ([image_input(png_header_only(9000, 9000))], {}, 413, "image[0]: "),
    ([image_input(*[png()] * 33)], {}, 413, "33 images in one request; the limit is 32"),
    ([{"name": "image", "datatype": "BYTES", "shape": [0], "data": []}], {}, 400, "no images"),
    ([pixels_input("UINT8", [1, 3, 16, 16], 0)], {}, 400, "[N, 3, 32, 32]"),
    ([pixels_input("FP16", [1, 3, 32, 32], 0)], {}, 400, "must be UINT8 or FP32"),
    ([pixels_input("FP32", [1, 3, 32, 32], 1.5)], {}, 400, "0.0 … 1.0"),
    ([pixels_input("UINT8", [1, 3, 32, 32], 300)], {}, 400, "0 … 255"),
    ([image_input(png())], {"outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
    ([image_input(png())], {"outputs": [{"name": "class"}, {"name": "class"}]}, 400,
     "more than once"),
])
def test_bad_inference_requests_get_a_4xx_error_body(
    client: TestClient, inputs: list[dict], request_fields: dict, status: int, message: str
) -> None:
    response = infer_json(client, inputs, **request_fields)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


def test_a_body_that_is_not_an_inference_request_is_400(client: TestClient) -> None:
    for body in (b"", b"not json", b"[1, 2]"):
        response = client.post(INFER, content=body)
        assert response.status_code == 400 and "error" in response.json()


def test_a_compressed_body_is_400_naming_the_encoding(client: TestClient) -> None:
    response = client.post(INFER, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "Content-Encoding 'gzip' is not supported; send the body uncompressed"}


def test_an_image_over_the_per_image_byte_limit_is_413(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=1000)
    big = png((64, 64), (1, 2, 3)) + b"\0" * 1000
    response = infer_json(client, [image_input(big)])
    assert response.status_code == 413
    assert "over the 1,000-byte limit per image" in response.json()["error"]


def test_a_body_over_the_request_limit_is_413_unread(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_upload_bytes=1000, max_batch_bytes=2000)
    response = client.post(INFER, content=b"x" * 2001)
    assert response.status_code == 413
    assert response.json() == {"error": "the request is larger than the 2,000-byte limit for "
                                        "a whole inference request; send fewer or smaller images"}


@pytest.mark.parametrize("path", [INFER, "/v2/models/random_cnn/versions/x/infer"])
def test_the_api_key_guards_inference_with_an_error_body(
    make_client: Callable[..., TestClient], path: str
) -> None:
    client = make_client(api_key="s3cret-key")
    response = infer_json(client, [image_input(png())], path=path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "missing or wrong API key" in response.json()["error"]


def test_with_the_api_key_inference_works_and_metadata_needs_none(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_key="s3cret-key")
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/random_cnn",
                 "/v2/models/random_cnn/ready"):
        assert client.get(path).status_code == 200, path
    for header in ({"X-API-Key": "s3cret-key"}, {"Authorization": "Bearer s3cret-key"}):
        response = client.post(INFER, headers=header,
                               content=orjson.dumps({"inputs": [image_input(png())]}))
        assert response.status_code == 200


def test_the_api_key_is_documented_on_the_infer_routes_only(
    make_client: Callable[..., TestClient],
) -> None:
    paths = make_client(api_key="s3cret-key").get("/openapi.json").json()["paths"]
    assert "security" in paths["/v2/models/{name}/infer"]["post"]
    assert "security" in paths["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert "security" not in paths["/v2/models/{name}"]["get"]


def test_a_full_queue_is_503_with_retry_after_and_an_error_body(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(queue_capacity=1, retry_after_s=2)
    gate = ModelGate(client.app.state.service.predictor.model)
    gate.close()
    try:
        with ThreadPoolExecutor(1) as pool:
            admitted = pool.submit(infer_json, client, [image_input(png())])
            wait_until(lambda: client.app.state.service.batcher.admitted == 1, what="full")
            rejected = infer_json(client, [image_input(png())])
            gate.open()
            assert admitted.result().status_code == 200
    finally:
        gate.remove()
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "2"
    assert "queue is full" in rejected.json()["error"]


def test_past_the_request_timeout_is_504_with_an_error_body(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(request_timeout_s=0.2)
    gate = ModelGate(client.app.state.service.predictor.model)
    gate.close()
    try:
        response = infer_json(client, [image_input(png())])
    finally:
        gate.remove()
    assert response.status_code == 504
    assert "0.2 s request timeout" in response.json()["error"]


def test_a_model_failure_is_a_500_error_body_with_the_request_id(
    client: TestClient, gate: ModelGate
) -> None:
    gate.fail_with = RuntimeError("boom")
    response = infer_json(client, [image_input(png())])
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
