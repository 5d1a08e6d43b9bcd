"""The checkpoints shipped in models/: they load safely, match their reports, carry no paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "models").glob("*.pt"))


def test_both_shipped_networks_are_there() -> None:
    assert {p.name for p in SHIPPED} == {"cifar10_tutorial_cnn.pt", "cifar10_whitened_vgg.pt"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_checkpoint_loads_matches_its_report_and_fits_the_size_limit(path: Path) -> None:
    assert path.stat().st_size <= 30 * 1024 * 1024
    loaded = load_checkpoint(path)
    report = json.loads(path.with_name(path.stem + ".report.json").read_text())
    assert report["meta"]["metrics"] == loaded.meta.metrics
    assert report["meta"]["temperature"] == loaded.meta.temperature
    # The file itself stores names only, so neither it nor what /model shows has a path.
    public = loaded.meta.public_dict()
    for value in [*loaded.meta.data.values(), *loaded.meta.training.values(),
                  *public["data"].values(), *public["training"].values()]:
        assert "/" not in str(value) and "\\" not in str(value), value
    with torch.no_grad():
        probs = torch.softmax(loaded.model(torch.zeros(1, 3, 32, 32)), dim=1)
    assert probs.shape == (1, len(loaded.meta.classes))
