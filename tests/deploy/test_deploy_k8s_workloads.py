"""The pod templates under deploy/k8s/ (every rendered layout's Deployment and the KServe
predictor) agree with the service they run: probes and scrape paths are routes the app
serves, ports are where it listens, env vars are settings it reads with values it accepts,
workers fit the CPU limit, the container cannot write or escalate, and shutdown fits in the
grace period."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from deploy_support import (
    OIP_V2_ROUTES,
    Workload,
    container_port,
    effective_security,
    parse_cpu,
    resolve_env,
    runtime_image,
    served_app,
    serves_get,
    service_link_names,
    setting_env_names,
    shadows_settings,
    stop_margin_s,
    workloads,
)

from app.settings import ENV_PREFIX, Settings, load_settings

WORKLOADS = workloads()
IMAGE_UID = 10001


def each_container(workload: Workload) -> Iterator[dict]:
    yield from workload.pod_spec["containers"]


@pytest.fixture(scope="module")
def app() -> Any:
    return served_app()


def settings_for(container: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the container's process would start with (image ENV + manifest env)."""
    env = resolve_env(container, runtime_image().env)
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) or name.upper() == "MODEL_PATH":
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name in setting_env_names():
            monkeypatch.setenv(name, value)
    if env.get(f"{ENV_PREFIX}DEVICE", "").startswith("cuda"):
        # As on the GPU node: the setting checks that the device exists.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    return load_settings()


pytestmark = pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.id)


def test_probes_get_routes_the_app_serves(workload: Workload, app: Any) -> None:
    for container in each_container(workload):
        probes = {k: container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"] and probes["livenessProbe"], container["name"]
        for kind, probe in probes.items():
            if probe is None:
                continue
            path = probe["httpGet"]["path"]
            if path.startswith("/v2/") and not any(serves_get(app, p) for p in OIP_V2_ROUTES):
                pytest.skip("the app serves no Open Inference Protocol v2 routes yet")
            assert serves_get(app, path), f"{kind}: the app has no GET {path}"


def test_ports_are_where_the_service_listens(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    for container in each_container(workload):
        settings = settings_for(container, monkeypatch)
        assert settings.host in ("0.0.0.0", "::"), "probes and Services reach other addresses"
        declared = [p["containerPort"] for p in container["ports"]]
        assert declared == [settings.port]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in container:
                assert container_port(container, container[kind]["httpGet"]["port"]) == \
                    settings.port, kind


def test_image_command_and_port_match_the_manifests(workload: Workload) -> None:
    """`python -m app` is what reads CNN_SERVE_HOST/PORT/WORKERS; the image's EXPOSE documents
    the port unless the manifest moves it (KServe's 8080)."""
    image = runtime_image()
    assert image.cmd == ["python", "-m", "app"]
    for container in each_container(workload):
        port = int(resolve_env(container, image.env)[f"{ENV_PREFIX}PORT"])
        moved = any(v["name"] == f"{ENV_PREFIX}PORT" and v.get("value") != image.env.get(
            f"{ENV_PREFIX}PORT") for v in container.get("env", []))
        assert moved or port in image.expose


def test_env_vars_are_settings_the_service_reads(workload: Workload) -> None:
    known = setting_env_names() | workload.extra_env
    for container in each_container(workload):
        names = [var["name"] for var in container.get("env", [])]
        assert sorted(set(names) - known) == [], f"not settings; settings are {sorted(known)}"
        assert len(names) == len(set(names)), "a variable is set twice"


def test_env_values_are_accepted_by_the_settings(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    for container in each_container(workload):
        settings_for(container, monkeypatch)  # SettingsError names the variable


def test_workers_fill_the_cpu_limit_without_oversubscribing_it(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    for container in each_container(workload):
        settings = settings_for(container, monkeypatch)
        limit = parse_cpu(container["resources"]["limits"]["cpu"])
        request = parse_cpu(container["resources"]["requests"]["cpu"])
        assert limit == int(limit), "a fractional CPU limit throttles the last worker"
        assert request > 0  # the HPA's utilisation is relative to it
        assert settings.workers is not None, "unset, the count would follow the node's CPUs " \
                                             "on cgroup v1"
        if settings.device.startswith("cuda"):
            assert settings.workers == 1, "one process owns the GPU"
        else:
            assert settings.workers * settings.torch_threads == limit


def test_container_runs_as_the_image_user_without_privileges(workload: Workload) -> None:
    assert runtime_image().user in (f"{IMAGE_UID}", f"{IMAGE_UID}:{IMAGE_UID}")
    for container in each_container(workload):
        security = effective_security(workload.pod_spec, container)
        assert security.get("runAsNonRoot") is True
        assert (security.get("runAsUser"), security.get("runAsGroup")) == (IMAGE_UID, IMAGE_UID)
        assert security.get("allowPrivilegeEscalation") is False
        assert security.get("readOnlyRootFilesystem") is True
        assert security.get("capabilities", {}).get("drop") == ["ALL"]
        assert not security.get("capabilities", {}).get("add")
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert not security.get("privileged")


def test_only_emptydir_mounts_are_writable_and_tmp_is_one(workload: Workload) -> None:
    """With a read-only root, the workers' Prometheus folder (tempfile.mkdtemp) needs /tmp."""
    volumes = {v["name"]: v for v in workload.pod_spec.get("volumes", [])}
    for container in each_container(workload):
        assert "TMPDIR" not in resolve_env(container, runtime_image().env)
        writable = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])
                    if not m.get("readOnly")}
        assert "/tmp" in writable
        for path, volume in writable.items():
            assert "emptyDir" in volume, f"{path} is writable and not an emptyDir"
            assert volume["emptyDir"].get("sizeLimit"), f"{path}: no sizeLimit"


def test_termination_grace_outlasts_prestop_and_graceful_shutdown(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    grace = workload.pod_spec["terminationGracePeriodSeconds"]
    for container in each_container(workload):
        settings = settings_for(container, monkeypatch)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        worst = pre_stop.get("seconds", 0) + settings.shutdown_timeout_s + stop_margin_s()
        assert grace > worst, f"SIGKILL at {grace} s can cut a {worst} s stop short"


def test_service_links_cannot_shadow_settings(workload: Workload) -> None:
    """A Service named cnn-serve makes the kubelet set CNN_SERVE_PORT=tcp://… in the pod."""
    linked = set().union(*(service_link_names(name) for name in workload.service_names))
    if shadows_settings(linked):
        assert workload.pod_spec.get("enableServiceLinks") is False, sorted(
            shadows_settings(linked))


def test_prometheus_scrape_annotations_point_at_the_metrics_route(
    workload: Workload, app: Any
) -> None:
    if workload.kind == "InferenceService":
        pytest.skip("KServe makes the pods; scraping them is the KServe installation's setting")
    annotations = workload.annotations
    assert annotations.get("prometheus.io/scrape") == "true"
    assert serves_get(app, annotations.get("prometheus.io/path", "")), "no such GET route"
    ports = {p["containerPort"] for c in each_container(workload) for p in c["ports"]}
    assert int(annotations.get("prometheus.io/port", "0")) in ports
