"""Fixtures for the training tests: a tiny image-folder dataset generated in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def write_split(root: Path, per_class: int, seed: int) -> None:
    """Noisy images of one dominant colour per class, as PNG and JPEG files."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            noise = rng.normal(0, 40, (32, 32, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i:03d}{suffix}")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/train/<class>/* (60 per class) and DIR/test/<class>/* (10 per class)."""
    root = tmp_path_factory.mktemp("tiny")
    write_split(root / "train", 60, seed=1)
    write_split(root / "test", 10, seed=2)
    return root


@pytest.fixture
def train_args(tiny_dataset: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """The argv of a small, fast run writing into tmp_path; extra flags appended."""

    def make(*extra: str, name: str = "model") -> list[str]:
        return [
            "--dataset", "folder", "--data-dir", str(tiny_dataset),
            "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--log-every", "5",
            "--output", str(tmp_path / f"{name}.pt"), "--logdir", str(tmp_path / f"runs-{name}"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu",
            *extra,
        ]

    return make


@pytest.fixture
def straight_and_resumed(
    train_args: Callable[..., list[str]], tmp_path: Path,
) -> Callable[..., tuple[dict, dict]]:
    """Train `recipe` straight through, and again stopped after one epoch and resumed; the two
    final state_dicts, for tests that a recipe's resume restores everything it keeps."""
    from models.checkpoint import load_checkpoint
    from training import run

    def train(*recipe: str) -> tuple[dict, dict]:
        run.main(run.get_args_parser().parse_args(train_args(*recipe, name="straight")))
        run.main(run.get_args_parser().parse_args(
            train_args(*recipe, "--stop-after", "1", name="resumed")))
        run.main(run.get_args_parser().parse_args(
            ["--resume", str(tmp_path / "resumed.state.pt"), "--no-progress"]))
        return (load_checkpoint(tmp_path / "straight.pt").model.state_dict(),
                load_checkpoint(tmp_path / "resumed.pt").model.state_dict())

    return train
