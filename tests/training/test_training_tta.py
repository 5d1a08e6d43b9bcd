"""Test-time augmentation from the checkpoint reaches predict and the end-of-run metrics."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from models.architectures import build_model
from models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from models.preprocess import normalize
from training import run
from training.predict import classify


def test_predict_averages_the_mirror_when_the_checkpoint_says_flip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("tutorial_cnn", 3).eval()
    meta = CheckpointMeta(arch="tutorial_cnn", classes=["a", "b", "c"], input_size=32,
                          mean=[0.5] * 3, std=[0.25] * 3, temperature=1.7, tta="flip")
    save_checkpoint(tmp_path / "m.pt", model, meta)
    pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buf, "PNG")

    probs = classify(load_checkpoint(tmp_path / "m.pt"), buf.getvalue())

    x = normalize(pixels.permute(2, 0, 1).unsqueeze(0), meta.mean, meta.std)
    with torch.no_grad():
        logits = (model(x) + model(x.flip(3))) / 2
    torch.testing.assert_close(probs, torch.softmax(logits[0] / 1.7, dim=0))


def test_a_run_with_flip_tta_records_it_and_the_accuracy_without_it(train_args, tmp_path):
    summary = run.main(run.get_args_parser().parse_args(train_args("--epochs", "1",
                                                                   "--tta", "flip")))
    meta = load_checkpoint(tmp_path / "model.pt").meta
    assert meta.tta == "flip"
    assert 0.0 <= meta.metrics["val_accuracy_no_tta"] <= 1.0
    assert "flip TTA" in summary["lines"][0]
    assert 0.0 <= meta.metrics["val_accuracy_tta_multicrop"] <= 1.0
    assert "val_accuracy_tta_flip" not in meta.metrics  # that one is val_accuracy itself


def test_resuming_a_finished_run_with_another_tta_recalibrates_it_for_that_tta(
        train_args, tmp_path):
    run.main(run.get_args_parser().parse_args(train_args("--epochs", "1", "--tta", "multicrop")))
    first = load_checkpoint(tmp_path / "model.pt")
    run.main(run.get_args_parser().parse_args(
        ["--resume", str(tmp_path / "model.state.pt"), "--tta", "flip", "--no-progress"]))
    again = load_checkpoint(tmp_path / "model.pt")
    assert (first.meta.tta, again.meta.tta) == ("multicrop", "flip")
    for key, value in first.model.state_dict().items():  # the same weights, not retrained
        assert torch.equal(value, again.model.state_dict()[key]), key
    # Each run measured the other's mode as well: the two views of one model agree.
    assert again.meta.metrics["val_accuracy"] == first.meta.metrics["val_accuracy_tta_flip"]
    assert again.meta.metrics["val_accuracy_tta_multicrop"] == first.meta.metrics["val_accuracy"]
    assert again.meta.training["train_seconds"] == first.meta.training["train_seconds"]


def test_resuming_without_tta_keeps_the_runs_own(train_args, tmp_path):
    run.main(run.get_args_parser().parse_args(train_args("--epochs", "1", "--tta", "multicrop")))
    run.main(run.get_args_parser().parse_args(
        ["--resume", str(tmp_path / "model.state.pt"), "--no-progress"]))
    assert load_checkpoint(tmp_path / "model.pt").meta.tta == "multicrop"  # not the recipe's
