"""The strong network through the service: folded BatchNorm, flip TTA from the checkpoint or
CNN_SERVE_TTA, and /model without the training machine's paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from app_support import make_meta, png, save_random_checkpoint
from fastapi.testclient import TestClient
from torch import nn

from models.architectures import build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.images import decode_image
from models.preprocess import image_to_uint8, normalize


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-9 with non-trivial BatchNorm statistics, recorded with flip TTA."""
    torch.manual_seed(0)
    model = build_model("resnet9", 10).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("resnet") / "cifar10_resnet9.pt"
    save_checkpoint(path, model, make_meta(arch="resnet9", tta="flip", temperature=1.3))
    return path


def expected(path: Path, data: bytes, tta: str) -> list[float]:
    """The unfolded network's answer, computed here without the service."""
    loaded = load_checkpoint(path)
    meta = loaded.meta
    img = decode_image(data, max_pixels=10**7, target_size=meta.input_size)
    x = normalize(image_to_uint8(img, meta.input_size).unsqueeze(0), meta.mean, meta.std)
    with torch.inference_mode():
        logits = loaded.model(x)
        if tta == "flip":
            logits = (logits + loaded.model(x.flip(3))) / 2
        return torch.softmax(logits / meta.temperature, dim=1)[0].tolist()


@pytest.mark.parametrize(("setting", "served"), [(None, "flip"), ("off", "off"),
                                                 ("flip", "flip")])
def test_resnet9_serves_with_the_checkpoints_tta_unless_overridden(
    make_client, resnet_checkpoint: Path, setting: str | None, served: str
) -> None:
    overrides = {} if setting is None else {"tta": setting}
    client: TestClient = make_client(resnet_checkpoint, **overrides)
    data = png((48, 40), (30, 120, 200))
    body = client.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    assert body["model"]["arch"] == "resnet9"
    assert list(body["probabilities"].values()) == pytest.approx(
        expected(resnet_checkpoint, data, served), abs=2e-5)
    assert client.get("/model").json()["tta"] == served


def test_the_served_resnet_has_its_batchnorm_folded_unless_turned_off(
    make_client, resnet_checkpoint: Path
) -> None:
    def batchnorms(client: TestClient) -> int:
        model = client.app.state.service.predictor.model
        return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    assert batchnorms(make_client(resnet_checkpoint)) == 0
    assert batchnorms(make_client(resnet_checkpoint, fold_batchnorm=False)) == 8


def test_model_shows_no_path_from_an_older_checkpoint(make_client, tmp_path: Path) -> None:
    path = save_random_checkpoint(
        tmp_path / "old.pt",
        data={"dataset": "folder", "source": "/root/.cache/cifar10/train"},
        training={"data_dir": "/root/.cache/cifar10", "output": "/tmp/expB/m.pt",
                  "logdir": "/tmp/expB/runs"},
    )
    body = make_client(path).get("/model").json()
    assert body["data"]["source"] == "train"
    assert body["training"] == {"data_dir": "cifar10", "output": "m.pt", "logdir": "runs"}
    assert "/root" not in str(body) and "/tmp" not in str(body)


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_precision_auto_is_bf16_only_where_the_cpu_has_it(
    make_client, resnet_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, fast_bf16: bool
) -> None:
    monkeypatch.setattr("models.devices.cpu_has_fast_bf16", lambda: fast_bf16)
    client: TestClient = make_client(resnet_checkpoint, precision="auto")
    assert client.get("/model").json()["precision"] == ("bf16" if fast_bf16 else "fp32")
    data = png((32, 32), (200, 90, 10))
    body = client.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    # bf16 moves each probability a little, never far from the fp32 answer.
    assert list(body["probabilities"].values()) == pytest.approx(
        expected(resnet_checkpoint, data, "flip"), abs=0.03 if fast_bf16 else 2e-5)
