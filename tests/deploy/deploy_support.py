"""What the deploy/k8s tests compare the manifests with: the real app, image and settings.

Read from their sources at test time, so the checks follow the code: the routes from the app
that `python -m app` serves, the port, user and command from the Dockerfile's runtime stage,
the environment variable names from `Settings`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
from kustomize_render import load_documents, pod_spec, render
from pydantic import AliasChoices
from starlette.routing import Match

from app.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
# The schemas the manifests are validated against (kubernetes-validate ships them). The
# manifests use nothing newer than Kubernetes 1.30 (preStop `sleep`).
KUBERNETES_VERSION = "1.34"
LAYOUTS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
KSERVE_EXAMPLES = sorted((K8S / "kserve").glob("*.yaml"))
# InferenceService spec.predictor fields that are KServe's own (its v1beta1
# ComponentExtensionSpec); a custom predictor's other fields are a Kubernetes PodSpec.
KSERVE_EXTENSION_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
    "annotations", "deploymentStrategy",
}
# The built-in predictors, which a custom predictor's containers exclude.
KSERVE_MODEL_PREDICTORS = {
    "model", "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface",
    "pmml", "lightgbm", "paddle", "storageUris", "workerSpec",
}
# The Open Inference Protocol v2 health and server-metadata routes.
OIP_V2_ROUTES = ("/v2", "/v2/health/live", "/v2/health/ready")
# Read by KServe's controller from a custom predictor's first container, not by the service.
KSERVE_CONTROLLER_ENV = {"PROTOCOL"}


@dataclass
class Workload:
    """One pod template: a rendered Deployment, or a KServe predictor."""

    id: str
    kind: str
    pod_spec: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    # Services whose names the pod's service-link variables would carry.
    service_names: list[str] = field(default_factory=list)
    extra_env: set[str] = field(default_factory=set)  # names read by someone else


def schema_error(resource: dict[str, Any]) -> str | None:
    """Why `resource` breaks the pinned Kubernetes version's schema in strict mode (unknown
    fields are errors), or None."""
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        return f"{resource['kind']}/{resource['metadata']['name']} at {where}: {exc.message}"
    return None


def rendered_layouts() -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    for layout in LAYOUTS:
        yield layout, render(layout)


def kserve_predictor_pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    predictor = resource["spec"]["predictor"]
    return {k: v for k, v in predictor.items() if k not in KSERVE_EXTENSION_FIELDS}


def workloads() -> list[Workload]:
    found = []
    for layout, resources in rendered_layouts():
        services = [r["metadata"]["name"] for r in resources if r["kind"] == "Service"]
        for resource in resources:
            if (spec := pod_spec(resource)) is not None:
                found.append(Workload(
                    id=f"{layout.relative_to(K8S)}:{resource['kind']}/"
                       f"{resource['metadata']['name']}",
                    kind=resource["kind"],
                    pod_spec=spec,
                    annotations=resource["spec"]["template"]["metadata"].get("annotations", {}),
                    service_names=services,
                ))
    for path in KSERVE_EXAMPLES:
        for resource in load_documents(path):
            name = resource["metadata"]["name"]
            found.append(Workload(
                id=f"{path.relative_to(K8S)}:InferenceService/{name}",
                kind="InferenceService",
                pod_spec=kserve_predictor_pod_spec(resource),
                # RawDeployment: KServe names the predictor's Service <name>-predictor.
                service_names=[f"{name}-predictor"],
                extra_env=KSERVE_CONTROLLER_ENV,
            ))
    return found


# --- the app --------------------------------------------------------------------------------

def served_app() -> Any:
    """The ASGI app that `python -m app` (the image's CMD) serves."""
    from uvicorn.importer import import_from_string

    entry = importlib.import_module("app.__main__")
    target = getattr(entry, "APP", "app.main:app")
    return import_from_string(target) if isinstance(target, str) else target


def serves_get(app: Any, path: str) -> bool:
    """Whether the app's own routing sends `GET path` to a route (included routers, mounts and
    path parameters as in a real request)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [],
             "query_string": b"", "path_params": {}}
    return any(route.matches(dict(scope))[0] is Match.FULL for route in app.routes)


def stop_margin_s() -> float:
    """How long the supervisor waits for its workers beyond their graceful shutdown."""
    return float(importlib.import_module("app.__main__").STOP_MARGIN_S)


def setting_env_names() -> set[str]:
    """Every environment variable name `Settings` reads, as pydantic-settings maps them:
    the prefix plus the field name, or the field's own aliases (MODEL_PATH)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(str(alias).upper())
    return names


def is_setting_name(name: str) -> bool:
    return name in setting_env_names()


def service_link_names(service: str, ports: list[int] | None = None) -> set[str]:
    """Variables the kubelet adds to pods for a Service in their namespace (service links)."""
    base = service.upper().replace("-", "_")
    names = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
    for port in ports or [80]:
        names |= {f"{base}_PORT_{port}_TCP{suffix}" for suffix in ("", "_PROTO", "_PORT", "_ADDR")}
    return names


def shadows_settings(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(ENV_PREFIX) or is_setting_name(n)}


# --- the image ------------------------------------------------------------------------------

@dataclass
class Image:
    env: dict[str, str]
    expose: set[int]
    user: str | None
    cmd: list[str]


def runtime_image(dockerfile: Path = DOCKERFILE) -> Image:
    """ENV, EXPOSE, USER and CMD of the Dockerfile's last stage (the one that runs)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    image = Image(env={}, expose=set(), user=None, cmd=[])
    for line in lines[last_from + 1:]:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                image.env[key] = value
        elif instruction == "EXPOSE":
            image.expose |= {int(port.split("/")[0]) for port in args.split()}
        elif instruction == "USER":
            image.user = args.strip()
        elif instruction == "CMD":
            image.cmd = json.loads(args)
    return image


# --- containers -----------------------------------------------------------------------------

def parse_cpu(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def resolve_env(container: dict[str, Any], image_env: dict[str, str]) -> dict[str, str]:
    """The container's environment as the process sees it: the image's ENV, then the
    manifest's `env` (literal values and `resourceFieldRef`s to the container's CPU)."""
    env = dict(image_env)
    for var in container.get("env", []):
        # The API server refuses both (the schema does not say so).
        assert ("value" in var) != ("valueFrom" in var), f"{var['name']}: value or valueFrom"
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var.get("valueFrom", {}).get("resourceFieldRef")
        if ref is None:
            raise AssertionError(f"{var['name']}: only values and resourceFieldRef are handled")
        assert ref.get("containerName", container["name"]) == container["name"], ref
        kind, _, resource = ref["resource"].partition(".")
        assert resource == "cpu", f"{var['name']}: resourceFieldRef to {ref['resource']}"
        quantity = container["resources"][kind]["cpu"]
        # The kubelet rounds up: 1500m with divisor 1 gives 2.
        env[var["name"]] = str(math.ceil(parse_cpu(quantity) / parse_cpu(ref.get("divisor", 1))))
    return env


def effective_security(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's security context with the pod's defaults filled in."""
    merged = {
        key: pod.get("securityContext", {})[key]
        for key in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")
        if key in pod.get("securityContext", {})
    }
    merged.update(container.get("securityContext", {}))
    return merged


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port {port!r} is not a port of container {container['name']}"
    return named[port]
