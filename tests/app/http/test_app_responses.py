"""What the routes answer is what /openapi.json documents for them: every status in the
request → response matrix is listed on its route, with a body that validates against the
documented schema and the documented required headers."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from app_support import ModelGate, png, settings_for, wait_until
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from app.main import create_app

KEY = "s3cret-doc-key"
INFER = "/v2/models/random_cnn/infer"


def image_input(*images: bytes) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [len(images)],
            "data": [base64.b64encode(data).decode() for data in images]}


def infer_body(*images: bytes, **request: object) -> bytes:
    return orjson.dumps({"inputs": [image_input(*images)], **request})


def assert_documented(document: dict, method: str, template: str,
                      response: httpx.Response) -> None:
    """`response` is one that the document lists for `method template`: its status, its
    required headers, and (for JSON) a body of the documented schema."""
    documented = document["paths"][template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method} {template}: {status} is not documented"
    spec = documented[status]
    for name, header in spec.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method} {template} {status}: no {name}"
    media = response.headers["content-type"].split(";")[0]
    content = {kind.split(";")[0]: value for kind, value in spec["content"].items()}
    assert media in content, f"{method} {template} {status}: {media} is not documented"
    if media == "application/json":
        schema = {**content[media]["schema"], "components": document["components"]}
        Draft202012Validator(schema).validate(response.json())


@pytest.fixture(scope="module")
def keyed(checkpoint: Path) -> Iterator[tuple[TestClient, dict]]:
    """One started app for the whole matrix (its requests leave nothing behind), sending the
    key unless a request says otherwise, and its document."""
    settings = settings_for(checkpoint, api_key=KEY, max_batch_files=2)
    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as client:
        yield client, client.get("/openapi.json").json()


def upload(data: bytes) -> dict[str, Any]:
    return {"files": {"file": ("x.png", data, "image/png")}}


def uploads(count: int) -> dict[str, Any]:
    return {"files": [("files", (f"{i}.png", png(), "image/png")) for i in range(count)]}


WRONG_KEY = {"headers": {"X-API-Key": "wrong-key-123"}}

# (method, url, route template, request arguments, expected status)
MATRIX: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("POST", "/predict", "/predict", upload(png()), 200),
    ("POST", "/predict?top_k=10", "/predict", upload(png()), 200),
    ("POST", "/predict", "/predict", upload(b""), 400),
    ("POST", "/predict", "/predict", upload(png()[:60]), 400),
    ("POST", "/predict", "/predict", upload(b"hello, not an image"), 415),
    ("POST", "/predict", "/predict", {"data": {"caption": "no file"}}, 422),
    ("POST", "/predict?top_k=11", "/predict", upload(png()), 422),
    ("POST", "/predict", "/predict", {**upload(png()), **WRONG_KEY}, 401),
    ("POST", "/predict/batch", "/predict/batch", uploads(2), 200),
    ("POST", "/predict/batch", "/predict/batch", uploads(3), 413),
    ("POST", "/predict/batch", "/predict/batch", {"content": b"x", "headers": {
        "Content-Type": "multipart/form-data; boundary=b"}}, 400),
    ("GET", "/healthz", "/healthz", {}, 200),
    ("GET", "/model", "/model", {}, 200),
    ("GET", "/metrics", "/metrics", {}, 200),
    ("GET", "/v2", "/v2", {}, 200),
    ("GET", "/v2/health/live", "/v2/health/live", {}, 200),
    ("GET", "/v2/health/ready", "/v2/health/ready", {}, 200),
    ("GET", "/v2/models/random_cnn", "/v2/models/{name}", {}, 200),
    ("GET", "/v2/models/nope", "/v2/models/{name}", {}, 404),
    ("GET", "/v2/models/random_cnn/versions/nope", "/v2/models/{name}/versions/{version}", {},
     404),
    ("GET", "/v2/models/random_cnn/ready", "/v2/models/{name}/ready", {}, 200),
    ("GET", "/v2/models/nope/versions/0/ready", "/v2/models/{name}/versions/{version}/ready",
     {}, 404),
    ("POST", INFER, "/v2/models/{name}/infer", {"content": infer_body(png())}, 200),
    ("POST", INFER, "/v2/models/{name}/infer",
     {"content": infer_body(png(), parameters={"binary_data_output": True})}, 200),
    ("POST", INFER, "/v2/models/{name}/infer", {"content": b"not json"}, 400),
    ("POST", INFER, "/v2/models/{name}/infer", {"content": infer_body(b"")}, 400),
    ("POST", INFER, "/v2/models/{name}/infer", {"content": infer_body(png(), png(), png())},
     413),
    ("POST", INFER, "/v2/models/{name}/infer", {"content": infer_body(png()), **WRONG_KEY},
     401),
    ("POST", "/v2/models/nope/infer", "/v2/models/{name}/infer",
     {"content": infer_body(png())}, 404),
]


@pytest.mark.parametrize(("method", "url", "template", "arguments", "status"), MATRIX,
                         ids=[f"{m} {u} {s}" for m, u, _, a, s in MATRIX])
def test_the_answer_is_documented_for_its_route(
    keyed: tuple[TestClient, dict], method: str, url: str, template: str,
    arguments: dict[str, Any], status: int,
) -> None:
    client, document = keyed
    response = client.request(method, url, **arguments)
    assert response.status_code == status, response.text
    assert_documented(document, method, template, response)


def test_a_full_queue_answers_the_documented_503_on_every_route_that_runs_the_model(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(queue_capacity=1, retry_after_s=2)
    document = client.get("/openapi.json").json()
    gate = ModelGate(client.app.state.service.predictor.model)
    gate.close()
    try:
        with ThreadPoolExecutor(1) as pool:
            admitted = pool.submit(client.post, "/predict", **upload(png()))
            wait_until(lambda: client.app.state.service.batcher.admitted == 1, what="full")
            refused = [("POST", "/predict", client.post("/predict", **upload(png()))),
                       ("POST", "/predict/batch", client.post("/predict/batch", **uploads(1))),
                       ("POST", "/v2/models/{name}/infer",
                        client.post(INFER, content=infer_body(png())))]
            gate.open()
            assert admitted.result().status_code == 200
    finally:
        gate.remove()
    for method, template, response in refused:
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert_documented(document, method, template, response)
