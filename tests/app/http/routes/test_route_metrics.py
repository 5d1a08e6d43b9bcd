"""GET /metrics: Prometheus text with requests, latency, batches, queue, classes, model."""

from __future__ import annotations

from app_support import png
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def test_metrics_counts_requests_batches_classes_and_names_the_model(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/predict", files={"file": ("x.png", png())}).status_code == 200
    client.post("/predict", files={"file": ("x.png", b"junk")})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }
    ok = (("method", "POST"), ("route", "/predict"), ("status", "200"))
    bad = (("method", "POST"), ("route", "/predict"), ("status", "415"))
    assert samples[("cnn_serve_http_requests_total", ok)] == 3
    assert samples[("cnn_serve_http_requests_total", bad)] == 1
    assert samples[("cnn_serve_http_request_duration_seconds_count",
                    (("route", "/predict"),))] == 4
    assert samples[("cnn_serve_batch_size_count", ())] == 3
    assert samples[("cnn_serve_queue_depth", ())] == 0
    predicted = sum(v for (name, _), v in samples.items()
                    if name == "cnn_serve_predictions_total")
    assert predicted == 3
    sha = client.app.state.service.predictor.sha256[:12]
    info = (("arch", "tutorial_cnn"), ("device", "cpu"), ("name", "random_cnn"), ("sha256", sha))
    assert samples[("cnn_serve_model_info", info)] == 1


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    for path in ("/a", "/b", "/c"):
        client.get(path)
    text = client.get("/metrics").text
    assert 'route="unmatched",status="404"} 3.0' in text
    assert 'route="/a"' not in text


def test_requests_refused_before_routing_keep_their_routes_label(make_client) -> None:
    client = make_client(api_key="s3cret-key", max_upload_bytes=1000)
    assert client.post("/predict", files={"file": ("x.png", png())}).status_code == 401
    assert client.post("/v2/models/random_cnn/infer", json={}).status_code == 401
    key = {"Authorization": "Bearer s3cret-key"}
    too_big = client.post("/predict", headers=key, files={"file": ("x.png", b"x" * 5000)})
    assert too_big.status_code == 413
    text = client.get("/metrics").text
    assert 'method="POST",route="/predict",status="401"} 1.0' in text
    assert 'route="/v2/models/{name}/infer",status="401"} 1.0' in text
    assert 'method="POST",route="/predict",status="413"} 1.0' in text
    assert 'route="unmatched"' not in text
