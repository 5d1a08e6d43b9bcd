"""deploy/k8s/kserve/: an InferenceService with the image as a custom predictor that speaks
the Open Inference Protocol v2. It is a custom resource, so kubernetes-validate has no schema
for it: its structure is checked here against what KServe's v1beta1 API expects (its pod
spec is validated as a Kubernetes PodSpec in test_deploy_k8s_schemas.py, and checked like the
Deployments in test_deploy_k8s_workloads.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    KSERVE_EXAMPLES,
    KSERVE_EXTENSION_FIELDS,
    KSERVE_MODEL_PREDICTORS,
)
from kustomize_render import load_documents

DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def inference_services() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in KSERVE_EXAMPLES for doc in load_documents(path)]


pytestmark = pytest.mark.parametrize(
    ("path", "isvc"), inference_services(),
    ids=lambda v: v.name if isinstance(v, Path) else v["metadata"]["name"],
)


def test_is_a_v1beta1_inference_service_with_a_valid_name(path: Path, isvc: dict) -> None:
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"}
    # KServe names Services and hosts after it: a DNS-1035 label (starts with a letter).
    assert DNS_1035_LABEL.fullmatch(isvc["metadata"]["name"])
    assert set(isvc["spec"]) == {"predictor"}, "the example has no transformer or explainer"


def test_predictor_is_one_custom_container_named_kserve_container(path: Path, isvc: dict) -> None:
    predictor = isvc["spec"]["predictor"]
    assert not set(predictor) & KSERVE_MODEL_PREDICTORS, "containers exclude model predictors"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"]
    for field in ("minReplicas", "maxReplicas", "scaleTarget"):
        assert isinstance(predictor.get(field), int), field
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor["scaleMetric"] in {"cpu", "memory", "concurrency", "rps"}
    assert set(predictor) & KSERVE_EXTENSION_FIELDS <= {
        "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric"}


def test_predictor_declares_protocol_v2_as_kserve_reads_it(path: Path, isvc: dict) -> None:
    """KServe takes a custom predictor's protocol from a PROTOCOL env var on its first
    container (v1 when absent)."""
    container = isvc["spec"]["predictor"]["containers"][0]
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    assert env.get("PROTOCOL") == "v2"


def test_probes_use_the_protocol_v2_health_routes(path: Path, isvc: dict) -> None:
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_annotations_choose_raw_deployment_with_an_hpa(path: Path, isvc: dict) -> None:
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"


def test_example_names_the_v2_infer_route(path: Path, isvc: dict) -> None:
    assert "/v2/models/<name>/infer" in path.read_text()
