"""The whitened VGG through the service: multi-crop TTA from the checkpoint is what /predict
serves, with its BatchNorm folded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from app_support import encode, make_meta
from PIL import Image
from torch import nn

from models.architectures import build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.images import decode_image
from models.preprocess import image_to_uint8, normalize


@pytest.fixture(scope="module")
def whitened_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    model = build_model("whitened_vgg", 10).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.bias.data.uniform_(-0.1, 0.1)
    model.head.weight.data *= 200  # confident enough that the views disagree visibly
    path = tmp_path_factory.mktemp("whitened") / "cifar10_whitened_vgg.pt"
    save_checkpoint(path, model, make_meta(arch="whitened_vgg", tta="multicrop",
                                           temperature=0.8))
    return path


def photo() -> bytes:
    """A 45×37 PNG of random pixels: its views really differ (a flat colour's do not)."""
    pixels = torch.randint(0, 256, (37, 45, 3), generator=torch.Generator().manual_seed(1))
    return encode(Image.fromarray(pixels.to(torch.uint8).numpy()), "PNG")


def by_hand(path: Path, data: bytes, tta: str = "multicrop") -> list[float]:
    """Six views built here, weighted 1/4 for the unshifted pair and 1/8 for each shifted one
    (or the image alone with tta="off")."""
    loaded = load_checkpoint(path)
    meta = loaded.meta
    img = decode_image(data, max_pixels=10**7, target_size=meta.input_size)
    x = normalize(image_to_uint8(img, meta.input_size).unsqueeze(0), meta.mean, meta.std)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    with torch.inference_mode():
        def pair(v: torch.Tensor) -> torch.Tensor:
            return loaded.model(v) + loaded.model(v.flip(3))

        logits = 0.25 * pair(x) + 0.125 * sum(pair(v) for v in shifted) if tta != "off" \
            else loaded.model(x)
        return torch.softmax(logits / meta.temperature, dim=1)[0].tolist()


def test_predict_serves_the_checkpoints_multicrop_tta(make_client, whitened_checkpoint) -> None:
    client = make_client(whitened_checkpoint)
    data = photo()
    body = client.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    assert body["model"]["arch"] == "whitened_vgg"
    assert list(body["probabilities"].values()) == pytest.approx(
        by_hand(whitened_checkpoint, data), abs=5e-5)
    assert client.get("/model").json()["tta"] == "multicrop"
    model = client.app.state.service.predictor.model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_multicrop_can_be_turned_off_per_deployment(make_client, whitened_checkpoint) -> None:
    client = make_client(whitened_checkpoint, tta="off")
    assert client.get("/model").json()["tta"] == "off"
    data = photo()
    gap = max(abs(a - b) for a, b in zip(by_hand(whitened_checkpoint, data, "off"),
                                         by_hand(whitened_checkpoint, data), strict=True))
    assert gap > 1e-3  # the two modes are told apart below
    body = client.post("/predict", files={"file": ("x.png", data, "image/png")}).json()
    assert list(body["probabilities"].values()) == pytest.approx(
        by_hand(whitened_checkpoint, data, "off"), abs=5e-5)
