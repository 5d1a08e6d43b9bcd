"""pyproject.toml, the Dockerfile and the compose files agree: the serving image leaves the
train extra out, compose builds the right target, and the paths it names exist in the image."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TRAIN_ONLY = {"tensorboard", "matplotlib", "tqdm"}


def name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group().lower().replace("_", "-")


def stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped) per stage name;
    the last stage also under ""."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = [line]
            words = line.split()
            result[words[3] if len(words) == 4 and words[2].upper() == "AS" else line] = current
            result[""] = current
        else:
            current.append(line)
    return result


def compose(*files: str) -> list[dict]:
    return [yaml.safe_load((REPO / f).read_text()) for f in files]


def test_serving_dependencies_leave_the_train_extra_out() -> None:
    serving = {name(d) for d in PROJECT["project"]["dependencies"]}
    train = {name(d) for d in PROJECT["project"]["optional-dependencies"]["train"]}
    assert serving & TRAIN_ONLY == set()
    assert train >= TRAIN_ONLY


def test_the_dev_extra_brings_the_train_and_export_extras() -> None:
    dev = PROJECT["project"]["optional-dependencies"]["dev"]
    own = [d for d in dev if name(d) == PROJECT["project"]["name"]]
    assert len(own) == 1
    extras = {e.strip() for e in own[0].partition("[")[2].rstrip("]").split(",")}
    assert extras == {"train", "export"}


def test_serving_leaves_the_onnx_export_out() -> None:
    serving = {name(d) for d in PROJECT["project"]["dependencies"]}
    export = {name(d) for d in PROJECT["project"]["optional-dependencies"]["export"]}
    assert export >= {"onnx", "onnxruntime"} and not serving & export


def test_the_default_target_serves_and_the_train_target_trains() -> None:
    dockerfile = stages()
    assert dockerfile[""] is dockerfile["serve"]
    assert dockerfile["serve"][-1] == 'CMD ["python", "-m", "app"]'
    assert 'ENTRYPOINT ["python", "-m", "training.run"]' in dockerfile["train"]
    assert any("train.txt" in line for line in dockerfile["train"])
    assert not any("train.txt" in line for line in dockerfile["serve"] + dockerfile["deps"])
    for stage in ("serve", "train"):
        assert "USER 10001:10001" in dockerfile[stage], stage


def test_compose_builds_the_api_from_serve_and_the_trainers_from_train() -> None:
    (services,) = (c["services"] for c in compose("docker-compose.yml"))
    assert services["api"]["build"]["target"] == "serve"
    assert services["train"]["build"]["target"] == "train"
    assert services["train-gpu"]["build"]["target"] == "train"
    images = [services[s]["image"] for s in ("api", "train", "train-gpu")]
    assert len(set(images)) == 3, f"two targets share a tag: {images}"


def test_the_strong_override_names_the_installed_models_package() -> None:
    """MODEL_PATH in docker-compose.strong.yml is where pip puts models/*.pt in the image:
    VIRTUAL_ENV/lib/pythonX.Y/site-packages/models, X.Y from the base image's tag."""
    deps = stages()["deps"]
    version = re.match(r"FROM python:(\d+\.\d+)", deps[0]).group(1)
    venv = re.search(r"VIRTUAL_ENV=(\S+)", " ".join(deps)).group(1)
    (strong,) = (c["services"]["api"] for c in compose("docker-compose.strong.yml"))
    path = PurePosixPath(strong["environment"]["MODEL_PATH"])
    assert path.parent == PurePosixPath(venv, "lib", f"python{version}", "site-packages", "models")
    assert path.name == "cifar10_whitened_vgg.pt"
    assert any(fnmatch.fnmatch(path.name, glob)
               for glob in PROJECT["tool"]["setuptools"]["package-data"]["models"])


@pytest.mark.parametrize("path", sorted((REPO / "app" / "http" / "static").glob("*")),
                         ids=lambda p: p.name)
def test_the_wheel_ships_every_static_file(path: Path) -> None:
    globs = PROJECT["tool"]["setuptools"]["package-data"]["app.http"]
    relative = path.relative_to(REPO / "app" / "http").as_posix()
    assert any(fnmatch.fnmatch(relative, glob) for glob in globs), relative
