"""How the rendered resources of each layout refer to each other: the Service, the
HorizontalPodAutoscaler and the PodDisruptionBudget find the Deployment and its pods, and the
GPU overlay asks for a GPU and the CUDA device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deploy_support import K8S, LAYOUTS, container_port, resolve_env, runtime_image
from kustomize_render import render

from app.settings import ENV_PREFIX


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(params=LAYOUTS, ids=lambda p: str(p.relative_to(K8S)))
def resources(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_deployment_selects_its_own_pods_and_leaves_replicas_to_the_hpa(
    resources: list[dict[str, Any]],
) -> None:
    deployment = one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert "replicas" not in deployment["spec"], "kubectl apply would reset the HPA's count"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a rollout must not drop below the current pods"


def test_service_sends_to_the_pods_http_port(resources: list[dict[str, Any]]) -> None:
    deployment, service = one(resources, "Deployment"), one(resources, "Service")
    template = deployment["spec"]["template"]
    assert selects(service["spec"]["selector"], template["metadata"]["labels"])
    (container,) = template["spec"]["containers"]
    listening = int(resolve_env(container, runtime_image().env)[f"{ENV_PREFIX}PORT"])
    for port in service["spec"]["ports"]:
        assert container_port(container, port["targetPort"]) == listening


def test_hpa_scales_the_deployment_on_cpu_utilisation(resources: list[dict[str, Any]]) -> None:
    deployment, hpa = one(resources, "Deployment"), one(resources, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["requests"]["cpu"], "utilisation is relative to requests"


def test_pdb_selects_exactly_the_deployments_pods(resources: list[dict[str, Any]]) -> None:
    deployment, pdb = one(resources, "Deployment"), one(resources, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    hpa = one(resources, "HorizontalPodAutoscaler")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"], "a drain keeps one pod"


def test_gpu_overlay_asks_for_one_gpu_and_the_cuda_device() -> None:
    resources = render(K8S / "overlays" / "gpu")
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    env = resolve_env(container, runtime_image().env)
    assert env[f"{ENV_PREFIX}DEVICE"] == "cuda"
    assert env[f"{ENV_PREFIX}WORKERS"] == "1"
    assert pod["nodeSelector"] and pod["tolerations"]
    assert container["image"].endswith("-gpu"), "the CPU image has no CUDA"


@pytest.mark.parametrize("layout", [path for path in LAYOUTS if path.name != "gpu"],
                         ids=lambda p: str(p.relative_to(K8S)))
def test_other_layouts_run_on_the_cpu(layout: Path) -> None:
    (container,) = one(render(layout), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert resolve_env(container, runtime_image().env).get(f"{ENV_PREFIX}DEVICE", "auto") in (
        "auto", "cpu")
