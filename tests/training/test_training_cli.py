"""The command-line tools: --help of each, predict and evaluate on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.architectures import build_model
from models.checkpoint import CheckpointMeta, save_checkpoint
from training import evaluate, predict

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["run", "predict", "evaluate", "convert", "export"])
def test_every_command_has_help(module: str) -> None:
    result = subprocess.run([sys.executable, "-m", f"training.{module}", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m training.{module}")


@pytest.fixture
def colour_checkpoint(tmp_path: Path) -> Path:
    """A 3-class tutorial CNN that answers 'red' for every image (bias-only output)."""
    model = build_model("tutorial_cnn", 3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model[8].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    path = tmp_path / "red.pt"
    save_checkpoint(path, model, CheckpointMeta(
        arch="tutorial_cnn", classes=["blue", "green", "red"], input_size=32,
        mean=[0.5] * 3, std=[0.25] * 3, temperature=2.0))
    return path


def test_predict_prints_the_top_classes_with_calibrated_probabilities(
    colour_checkpoint: Path, tiny_dataset: Path, capsys
) -> None:
    image = next((tiny_dataset / "test" / "red").glob("*.png"))
    assert predict.cli([str(image), "--checkpoint", str(colour_checkpoint), "--json",
                        "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]) / 2.0, 0)
    assert out["class"] == "red"
    assert [t["class"] for t in out["top_k"]] == ["red", "green"]
    assert out["top_k"][0]["probability"] == pytest.approx(float(expected[2]), abs=1e-4)


def test_predict_reports_a_bad_file_and_exits_1(colour_checkpoint, tmp_path, capsys) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert predict.cli([str(bad), "--checkpoint", str(colour_checkpoint)]) == 1
    assert "not an image in a supported format" in capsys.readouterr().err


def test_evaluate_reports_accuracy_per_class_and_the_confusion_matrix(
    colour_checkpoint: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    png = tmp_path / "cm.png"
    argv = ["--checkpoint", str(colour_checkpoint), "--dataset", "folder",
            "--data-dir", str(tiny_dataset), "--split", "test", "--json",
            "--confusion-png", str(png), "--cache-dir", str(tmp_path / "cache")]
    assert evaluate.cli(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["per_class_accuracy"] == {"blue": 0.0, "green": 0.0, "red": 1.0}
    assert result["confusion_matrix"] == [[0, 0, 10], [0, 0, 10], [0, 0, 10]]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_val_split_is_the_one_training_held_out(tiny_dataset, tmp_path, capsys):
    from training import run

    argv = ["--dataset", "folder", "--data-dir", str(tiny_dataset), "--epochs", "1",
            "--batch-size", "16", "--output", str(tmp_path / "m.pt"), "--logdir",
            str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    run.main(run.get_args_parser().parse_args(argv))
    capsys.readouterr()
    assert evaluate.cli(["--checkpoint", str(tmp_path / "m.pt"), "--dataset", "folder",
                         "--data-dir", str(tiny_dataset), "--split", "val", "--json",
                         "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads(capsys.readouterr().out)
    trained = json.loads((tmp_path / "m.report.json").read_text())
    assert result["images"] == 18
    assert result["accuracy"] == trained["validation"]["val_accuracy"]
