"""The OpenAPI document at /openapi.json: valid OpenAPI, and saying what the running service
does: security only with an API key, the limits of its settings and model, the request id
on every response, and the errors' bodies and headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app_support import save_random_checkpoint, settings_for
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from app.main import create_app

KEY = "s3cret-doc-key"
# The routes that run the model: a configured key guards them, and only them.
GUARDED = {"/predict", "/predict/batch", "/v2/models/{name}/infer",
           "/v2/models/{name}/versions/{version}/infer"}


def operations(document: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


@pytest.fixture(scope="module")
def documents(checkpoint: Path) -> dict[str | None, dict]:
    """The served document without and with an API key, by key."""
    found = {}
    for key in (None, KEY):
        with TestClient(create_app(settings_for(checkpoint, api_key=key))) as client:
            found[key] = client.get("/openapi.json").json()
    return found


@pytest.mark.parametrize("api_key", [None, KEY])
def test_the_document_is_valid_openapi(documents: dict, api_key: str | None) -> None:
    validate(documents[api_key])


def test_a_document_built_before_startup_is_valid_and_claims_no_security() -> None:
    document = create_app().openapi()
    validate(document)
    assert "securitySchemes" not in document.get("components", {})
    assert not any("security" in operation for _, _, operation in operations(document))


def test_without_a_key_no_security_and_no_401_is_documented(
    documents: dict,
) -> None:
    doc = documents[None]
    assert "securitySchemes" not in doc["components"]
    for path, method, operation in operations(doc):
        assert "security" not in operation, (method, path)
        assert "401" not in operation["responses"], (method, path)


def test_with_a_key_exactly_the_routes_that_run_the_model_need_it(
    documents: dict,
) -> None:
    doc = documents[KEY]
    schemes = doc["components"]["securitySchemes"]
    assert sorted((s["type"], s.get("scheme") or s["name"]) for s in schemes.values()) == [
        ("apiKey", "X-API-Key"), ("http", "bearer")]
    guarded = set()
    for path, method, operation in operations(doc):
        if "security" in operation:
            guarded.add(path)
            # Either scheme will do: two alternatives, not both at once.
            assert sorted(operation["security"], key=str) == [{name: []} for name in
                                                              sorted(schemes)]
        assert ("401" in operation["responses"]) == ("security" in operation), (method, path)
    assert guarded == GUARDED


@pytest.mark.parametrize("api_key", [None, KEY])
def test_every_response_documents_the_request_id(documents: dict, api_key: str | None) -> None:
    for path, method, operation in operations(documents[api_key]):
        for status, response in operation["responses"].items():
            header = response["headers"]["X-Request-ID"]
            assert header["required"] is True, (method, path, status)


def test_client_errors_are_detail_objects_and_error_objects_under_v2(
    documents: dict,
) -> None:
    for path, _, operation in operations(documents[KEY]):
        expected = "V2Error" if path.startswith("/v2") else "ErrorBody"
        for status, response in operation["responses"].items():
            if status.startswith("4"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, status)


def test_the_routes_that_run_the_model_document_every_status_they_answer(
    documents: dict,
) -> None:
    paths = documents[KEY]["paths"]
    statuses = {path: set(paths[path]["post"]["responses"]) for path in GUARDED}
    assert statuses["/predict"] == statuses["/predict/batch"] == {
        "200", "400", "401", "408", "413", "415", "422", "500", "503", "504"}
    for path in GUARDED - {"/predict", "/predict/batch"}:
        # A bad image is bad tensor data (400) and there is no query or form to get wrong.
        assert statuses[path] == {"200", "400", "401", "404", "408", "413", "500", "503", "504"}
        assert set(paths[path]["post"]["responses"]["200"]["content"]) == {
            "application/json", "application/octet-stream"}
    for path in GUARDED:
        retry_after = paths[path]["post"]["responses"]["503"]["headers"]["Retry-After"]
        assert retry_after["required"] is True


def test_v2_metadata_routes_document_an_unknown_model_and_nothing_fastapi_made_up(
    documents: dict,
) -> None:
    doc = documents[None]
    for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}",
                 "/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"):
        assert set(doc["paths"][path]["get"]["responses"]) == {"200", "404", "503"}, path
    # FastAPI's own 422 body is never sent: this app's 422s are ErrorBody objects.
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])


def test_the_multipart_fields_are_required_images(documents: dict) -> None:
    paths = documents[None]["paths"]
    for path, field in (("/predict", "file"), ("/predict/batch", "files")):
        form = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert form["schema"]["required"] == [field]
        assert "image/png" in form["encoding"][field]["contentType"]


def test_the_limits_are_those_of_the_settings_and_the_served_model(
    make_client: Callable[..., TestClient], tmp_path: Path,
) -> None:
    three_classes = save_random_checkpoint(tmp_path / "three.pt", classes=["a", "b", "c"])
    client = make_client(model_path=three_classes, max_batch_files=5)
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/predict/batch"):
        [top_k] = paths[path]["post"]["parameters"]
        assert (top_k["schema"]["minimum"], top_k["schema"]["maximum"]) == (1, 3)
    files = paths["/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert (files["schema"]["properties"]["files"]["minItems"],
            files["schema"]["properties"]["files"]["maxItems"]) == (1, 5)


def test_the_v2_path_parameters_show_the_served_model(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    sha = client.get("/model").json()["sha256"]
    paths = client.get("/openapi.json").json()["paths"]
    parameters = {p["name"]: p for p in
                  paths["/v2/models/{name}/versions/{version}/infer"]["post"]["parameters"]}
    assert parameters["name"]["example"] == "random_cnn"
    assert parameters["version"]["example"] == sha[:12]
