"""Every manifest under deploy/k8s/ is valid Kubernetes, offline: the kustomize layouts
rendered (kustomize_render.py) and checked against the Kubernetes API's JSON schemas in
strict mode (an unknown or misspelt field fails), as shipped by kubernetes-validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import (
    K8S,
    KSERVE_EXAMPLES,
    LAYOUTS,
    kserve_predictor_pod_spec,
    schema_error,
)
from kustomize_render import load_documents, render


def test_deploy_k8s_holds_a_base_a_gpu_overlay_and_a_kserve_example() -> None:
    assert {K8S / "base", K8S / "overlays" / "gpu"} <= set(LAYOUTS)
    assert KSERVE_EXAMPLES


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: str(p.relative_to(K8S)))
def test_layout_renders_resources_valid_for_the_pinned_kubernetes(layout: Path) -> None:
    resources = render(layout)
    assert resources
    errors = [error for resource in resources if (error := schema_error(resource))]
    assert errors == []


def test_every_manifest_is_in_a_layout_or_a_kserve_example() -> None:
    """A YAML file nothing renders would never be validated."""
    covered = set(KSERVE_EXAMPLES)
    for layout in LAYOUTS:
        kustomization = load_documents(layout / "kustomization.yaml")[0]
        covered.add(layout / "kustomization.yaml")
        covered |= {(layout / entry).resolve() for entry in kustomization.get("resources", [])}
        covered |= {(layout / p["path"]).resolve() for p in kustomization.get("patches", [])}
    manifests = {path.resolve() for path in K8S.rglob("*.y*ml")}
    assert manifests - covered == set()


@pytest.mark.parametrize("path", KSERVE_EXAMPLES, ids=lambda p: p.name)
def test_kserve_predictor_pod_spec_is_a_valid_kubernetes_pod_spec(path: Path) -> None:
    """An InferenceService is a custom resource: no Kubernetes schema covers it (its structure
    is checked in test_deploy_k8s_kserve.py). Its predictor is KServe's fields plus a plain
    PodSpec, and that part is validated here as the spec of a Pod."""
    for resource in load_documents(path):
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": resource["metadata"]["name"]},
            "spec": kserve_predictor_pod_spec(resource),
        }
        assert schema_error(pod) is None
