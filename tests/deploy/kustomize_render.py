"""`kustomize build` for deploy/k8s/, in Python, so the tests need no kubectl binary.

Only what our kustomization files use, and an error for anything else, so a new feature in a
kustomization.yaml cannot be skipped silently:
- `resources`: YAML files (one or more documents) and folders with a kustomization.yaml;
- `images`: `name` → `newName`, `newTag`, `digest`, on containers and initContainers;
- `patches`: `- path: FILE`, a strategic-merge patch applied to the resource of the same
  apiVersion, kind and name.

The strategic merge follows Kubernetes': maps merge key by key, `null` deletes a key, lists of
containers, env vars, volumes and volume mounts merge by their merge key (the patch's items
first, then the base's others, as kustomize orders them), tolerations, args and command are
replaced. Any other list in a patch is an error. test_deploy_kustomize_render.py compares the
output with `kubectl kustomize` where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}
# patchMergeKey of the Kubernetes API fields that our patches touch.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
REPLACED_LISTS = {"tolerations", "args", "command"}  # no patchMergeKey in the API: atomic


class UnsupportedKustomization(ValueError):
    """The kustomization uses something this renderer does not implement."""


def load_documents(path: Path) -> list[Resource]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build DIRECTORY` would output (in resource-list order)."""
    kustomization_file = directory / "kustomization.yaml"
    spec = yaml.safe_load(kustomization_file.read_text())
    unknown = set(spec) - KUSTOMIZATION_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{kustomization_file}: {sorted(unknown)} not implemented")
    if (spec.get("apiVersion"), spec.get("kind")) != (
        "kustomize.config.k8s.io/v1beta1", "Kustomization"
    ):
        raise UnsupportedKustomization(f"{kustomization_file}: not a v1beta1 Kustomization")

    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(render(path) if path.is_dir() else load_documents(path))

    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise UnsupportedKustomization(
                f"{kustomization_file}: patches support only `path`, got {sorted(patch_entry)}"
            )
        for patch in load_documents(directory / patch_entry["path"]):
            target = _find_target(resources, patch)
            resources[resources.index(target)] = strategic_merge(target, patch)

    for image in spec.get("images", []):
        if not _set_image(resources, image):
            # kustomize ignores an entry that matches nothing; here it is a mistake.
            raise UnsupportedKustomization(
                f"{kustomization_file}: image {image['name']!r} matches no container"
            )
    return resources


def _find_target(resources: list[Resource], patch: Resource) -> Resource:
    key = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
    matches = [r for r in resources
               if (r["apiVersion"], r["kind"], r["metadata"]["name"]) == key]
    if len(matches) != 1:
        raise UnsupportedKustomization(f"patch {key} matches {len(matches)} resources")
    return matches[0]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """`patch` merged into a copy of `base`, by Kubernetes' strategic-merge rules (see above)."""
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise UnsupportedKustomization(f"{field}: patch directives are not implemented")
        merged = copy.deepcopy(base) if isinstance(base, dict) else {}
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(merged.get(key), value, key)
        return merged
    if isinstance(patch, list):
        if field in REPLACED_LISTS or base is None:
            return copy.deepcopy(patch)
        if field not in MERGE_KEYS:
            raise UnsupportedKustomization(f"merging the list {field!r} is not implemented")
        key = MERGE_KEYS[field]
        by_key = {item[key]: item for item in base}
        patched = [strategic_merge(by_key.get(item[key]), item, field) for item in patch]
        seen = {item[key] for item in patch}
        return patched + [copy.deepcopy(item) for item in base if item[key] not in seen]
    return patch


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod spec of a workload (Deployment, StatefulSet, …), None for other kinds."""
    return resource.get("spec", {}).get("template", {}).get("spec")


def _set_image(resources: list[Resource], image: dict[str, str]) -> bool:
    allowed = {"name", "newName", "newTag", "digest"}
    if set(image) - allowed:
        raise UnsupportedKustomization(f"images: {sorted(set(image) - allowed)} not implemented")
    found = False
    for resource in resources:
        spec = pod_spec(resource) or {}
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            found = True
            name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            else:
                tag = image.get("newTag", tag)
                container["image"] = name + (f":{tag}" if tag else "") + (
                    f"@{digest}" if digest and "newTag" not in image else "")
    return found


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """`registry:5000/name:tag@sha256:…` → (`registry:5000/name`, `tag`, `sha256:…`)."""
    rest, _, digest = reference.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1:], digest or None
    return rest, None, digest or None
