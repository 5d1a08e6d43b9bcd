"""End to end: a tiny run writes everything it promises, resumes exactly, refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from training import run
from training.engine import TrainingDiverged, cpu_has_fast_bf16


def train(argv: list[str]) -> dict:
    return run.main(run.get_args_parser().parse_args(argv))


def test_a_tiny_run_writes_checkpoint_reports_and_tensorboard_events(train_args, tmp_path):
    summary = train(train_args())
    assert summary["status"] == "done"

    loaded = load_checkpoint(tmp_path / "model.pt")
    meta = loaded.meta
    assert meta.arch == "tutorial_cnn" and meta.classes == ["blue", "green", "red"]
    assert meta.epochs == 2 and meta.temperature > 0
    assert meta.data["train_images"] == 162 and meta.data["val_images"] == 18
    assert meta.data["test_images"] == 30
    assert {"val_accuracy", "val_ece", "val_ece_calibrated", "test_accuracy"} <= set(meta.metrics)
    # `--precision auto` on a CPU: bf16 autocast where the CPU has native bf16, fp32 elsewhere.
    expected_precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert meta.training["precision"] == expected_precision
    assert meta.training["device"] == "cpu"
    # The colours are easy: the network must have learnt something in two epochs.
    assert meta.metrics["val_accuracy"] > 0.5
    # Names, not the training machine's folders: the checkpoint travels and /model shows it.
    assert meta.training["output"] == "model.pt" and meta.training["logdir"] == "runs-model"
    for value in [*meta.data.values(), *meta.training.values()]:
        assert "/" not in str(value) and str(tmp_path) not in str(value)

    report = json.loads((tmp_path / "model.report.json").read_text())
    assert set(report["test"]["per_class_accuracy"]) == {"blue", "green", "red"}
    assert sum(map(sum, report["test"]["confusion_matrix"])) == 30
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    for png in ("model.confusion.png", "model.curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((tmp_path / "runs-model").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_gets_loss_lr_accuracy_and_the_confusion_image(train_args, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(train_args())
    acc = EventAccumulator(str(tmp_path / "runs-model"), size_guidance={"images": 0}).Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/accuracy", "lr", "test/accuracy"} <= scalars
    assert len(acc.Scalars("val/accuracy")) == 2
    assert acc.Tags()["images"] == ["confusion/test"]


def test_the_second_run_reads_decoded_images_from_the_cache(train_args, tmp_path, monkeypatch):
    train(train_args("--epochs", "1"))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # train and test splits

    def no_decoding(*args):
        raise AssertionError("decoded an image although the cache holds it")

    monkeypatch.setattr("training.data._decode", no_decoding)
    assert train(train_args("--epochs", "1", name="again"))["status"] == "done"


def test_resuming_an_interrupted_run_equals_an_uninterrupted_one(train_args, tmp_path):
    train(train_args("--epochs", "3", name="straight"))
    paused = train(train_args("--epochs", "3", "--stop-after", "1", name="resumed"))
    assert paused["status"] == "paused" and paused["epoch"] == 1
    assert not (tmp_path / "resumed.pt").exists()
    resumed = train(["--resume", str(tmp_path / "resumed.state.pt"), "--no-progress"])
    assert resumed["status"] == "done"

    straight = load_checkpoint(tmp_path / "straight.pt")
    again = load_checkpoint(tmp_path / "resumed.pt")
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert straight.meta.metrics == again.meta.metrics
    assert straight.meta.temperature == again.meta.temperature


def test_a_diverging_run_stops_with_a_clear_message_and_saves_nothing(train_args, tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became (nan|inf).*lower --lr"):
        train(train_args("--lr", "1e12", "--momentum", "0"))
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_the_one_cycle_schedule_works_for_very_short_runs(steps: int) -> None:
    args = run.apply_recipe(run.get_args_parser().parse_args(["--epochs", "1"]))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    scheduler = run._make_scheduler(opt, args, steps)
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert all(0 < lr <= args.lr * (1 + 1e-9) for lr in used)  # OneCycleLR rounds up


@pytest.mark.parametrize(
    ("argv", "valid"),
    [
        (["--arch", "resnet"], ["resnet9", "tutorial_cnn", "vgg16"]),
        (["--dataset", "imagenet"], ["cifar10", "folder"]),
        (["--optimizer", "lion"], ["sgd", "adamw"]),
        (["--precision", "int8"], ["auto", "fp32", "bf16", "fp16"]),
    ],
)
def test_a_bad_choice_lists_the_valid_ones(argv, valid, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        run.get_args_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid choice: '{argv[1]}'" in err
    assert all(name in err.rpartition("choose from")[2] for name in valid)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-size", "64"], "tutorial_cnn only takes --input-size 32"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
        (["--batch-size", "1000"], "no full batch of 1000"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_settings_exit_2_with_a_message(train_args, extra, message, capsys) -> None:
    assert run.cli(train_args(*extra)) == 2
    assert message in capsys.readouterr().err


def test_a_missing_train_folder_says_what_layout_is_expected(tmp_path: Path, capsys) -> None:
    assert run.cli(["--dataset", "folder", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "expects DIR/train/<class>/*" in capsys.readouterr().err


def test_resuming_from_a_missing_state_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert run.cli(["--resume", str(tmp_path / "nope.state.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
