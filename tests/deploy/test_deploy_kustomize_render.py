"""kustomize_render.py, the tests' own `kustomize build`: the same output as kubectl's
kustomize on our layouts, Kubernetes' strategic-merge rules, and an error for what it does
not implement."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import K8S, LAYOUTS
from kustomize_render import UnsupportedKustomization, render, split_image, strategic_merge


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: str(p.relative_to(K8S)))
def test_render_matches_kubectl_kustomize(layout: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(layout)], capture_output=True, text=True,
                         timeout=60, check=True).stdout

    def by_id(docs: list[dict]) -> dict[tuple[str, str], dict]:
        return {(d["kind"], d["metadata"]["name"]): d for d in docs}

    assert by_id(render(layout)) == by_id(list(yaml.safe_load_all(out)))


def test_strategic_merge_merges_lists_by_key_with_the_patch_items_first() -> None:
    base = {"containers": [{"name": "api", "image": "x", "env": [
        {"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}]}]}
    patch = {"containers": [{"name": "api", "env": [
        {"name": "C", "value": "3"}, {"name": "B", "value": "2", "valueFrom": None}]}]}
    assert strategic_merge(base, patch) == {"containers": [{"name": "api", "image": "x", "env": [
        {"name": "C", "value": "3"}, {"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}]}
    assert base["containers"][0]["env"][1] == {"name": "B", "valueFrom": {"fieldRef": {}}}


def test_strategic_merge_replaces_atomic_lists_and_merges_maps() -> None:
    base = {"tolerations": [{"key": "a"}], "nodeSelector": {"x": "1"}}
    patch = {"tolerations": [{"key": "b"}], "nodeSelector": {"y": "2"}}
    assert strategic_merge(base, patch) == {
        "tolerations": [{"key": "b"}], "nodeSelector": {"x": "1", "y": "2"}}


@pytest.mark.parametrize("patch", [
    {"ports": [{"containerPort": 1}]},       # a list whose merge key is not implemented
    {"$patch": "replace"},                   # a patch directive
], ids=["unknown-list", "directive"])
def test_strategic_merge_refuses_what_it_does_not_implement(patch: dict) -> None:
    with pytest.raises(UnsupportedKustomization):
        strategic_merge({"ports": [{"containerPort": 2}]}, patch)


def write_layout(folder: Path, kustomization: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(kustomization)
    (folder / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {template: {spec: {containers: [{name: c, image: 'reg:5000/app:1'}]}}}\n")
    return folder


HEADER = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"


@pytest.mark.parametrize("extra", [
    "commonLabels: {a: b}\n",
    "namePrefix: x-\n",
    "patches: [{path: p.yaml, target: {kind: Deployment}}]\n",
    "images: [{name: other, newTag: '2'}]\n",
], ids=["commonLabels", "namePrefix", "patch-target", "image-matching-nothing"])
def test_render_refuses_kustomizations_it_cannot_build_faithfully(
    tmp_path: Path, extra: str
) -> None:
    layout = write_layout(tmp_path, HEADER + "resources: [deployment.yaml]\n" + extra)
    with pytest.raises(UnsupportedKustomization):
        render(layout)


def test_render_sets_images_by_name_in_an_overlay(tmp_path: Path) -> None:
    write_layout(tmp_path / "base", HEADER + "resources: [deployment.yaml]\n")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        HEADER + "resources: [../base]\nimages: [{name: 'reg:5000/app', newName: r/app, "
                 "newTag: '2'}]\n")
    (deployment,) = render(overlay)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "r/app:2"


@pytest.mark.parametrize(("reference", "parts"), [
    ("cnn-serve", ("cnn-serve", None, None)),
    ("cnn-serve:0.1.0", ("cnn-serve", "0.1.0", None)),
    ("reg:5000/team/cnn-serve", ("reg:5000/team/cnn-serve", None, None)),
    ("reg:5000/cnn-serve:1@sha256:ab", ("reg:5000/cnn-serve", "1", "sha256:ab")),
])
def test_split_image_separates_name_tag_and_digest(reference: str, parts: tuple) -> None:
    assert split_image(reference) == parts
