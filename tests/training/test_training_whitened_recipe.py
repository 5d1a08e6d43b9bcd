"""The whitened VGG's recipe end to end on tiny data: groups, schedule, freezing, resume."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_checkpoint
from training import run
from training.engine import Batches


def parse(*argv: str):
    return run.apply_recipe(run.get_args_parser().parse_args(list(argv)))


def train(argv: list[str]) -> dict:
    return run.main(run.get_args_parser().parse_args(argv))


def test_the_recipe_is_airbenchs_in_pytorchs_terms() -> None:
    args = parse("--arch", "whitened_vgg")
    assert (args.batch_size, args.momentum, args.label_smoothing) == (1024, 0.85, 0.2)
    assert (args.schedule, args.tta, args.flip_mode, args.pad_mode, args.optimizer) == (
        "triangle", "flip", "alternate", "reflect", "muon")
    # lr 10 per 1,024 images with a summed loss, Nesterov 0.85 → mean-loss lr 10 / 7.67.
    assert args.lr == pytest.approx(10 / (1 + 1 / 0.15), rel=1e-2)
    # Decoupled decay 0.0153 per 1,024 images / 7.67, then divided by lr (SGD multiplies).
    assert args.lr * args.weight_decay == pytest.approx(0.0153 / (1 + 1 / 0.15), rel=1e-2)


def test_biases_learn_64_times_faster_with_the_same_decay_per_step() -> None:
    from models.architectures import WhitenedVGG

    args = parse("--arch", "whitened_vgg", "--optimizer", "sgd")  # Muon's filters: test_muon
    model = WhitenedVGG(10, widths=(8, 8, 8))
    groups = {g["name"]: g for g in run._make_optimizer(model, args).param_groups}
    assert set(groups) == {"whiten_bias", "norm_biases", "weights"}
    assert groups["whiten_bias"]["params"] == [model.whiten.bias]
    assert len(groups["norm_biases"]["params"]) == 6
    assert len(groups["weights"]["params"]) == 7  # six convs and the head
    for name in ("whiten_bias", "norm_biases"):
        assert groups[name]["lr"] == pytest.approx(64 * args.lr)
        assert groups[name]["lr"] * groups[name]["weight_decay"] == pytest.approx(
            args.lr * args.weight_decay)


def test_other_recipes_keep_one_group() -> None:
    from models.architectures import build_model

    args = parse("--arch", "resnet9")
    groups = run._make_optimizer(build_model("resnet9", 10), args).param_groups
    assert len(groups) == 1 and groups[0]["lr"] == args.lr


def test_the_triangle_rises_to_its_peak_then_falls_to_its_end() -> None:
    total = 100
    values = [run.triangle(step, total) for step in range(total + 1)]
    assert values[0] == pytest.approx(0.2) and values[23] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.07)
    assert values[:24] == sorted(values[:24]) and values[23:] == sorted(values[23:],
                                                                        reverse=True)
    assert values[10] == pytest.approx(0.2 + 0.8 * 10 / 23)


def test_batches_mirror_each_image_in_every_other_epoch() -> None:
    n = 12
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.uint8).view(n, 3, 4, 4)
    index = torch.arange(n)

    def epoch_images(epoch: int) -> torch.Tensor:
        batches = Batches(images, index, index, 4, [0.0] * 3, [1.0] * 3, 0, True,
                          torch.Generator().manual_seed(epoch), False, flip_mode="alternate",
                          epoch=epoch, seed=5)
        out = torch.empty(n, 3, 4, 4)
        for x, y, _ in batches:
            out[y] = x
        return out

    plain = images.float() / 255
    seen = [epoch_images(e) for e in range(4)]
    mirrored = [torch.tensor([torch.equal(s[i], plain[i].flip(-1)) for i in range(n)])
                for s in seen]
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])
    assert torch.equal(mirrored[3], ~mirrored[0])


def test_resuming_the_recipe_equals_a_straight_run(train_args, tmp_path) -> None:
    """Lookahead's slow weights, alternating flips and the frozen stem bias all resume."""
    recipe = ("--arch", "whitened_vgg", "--epochs", "3", "--batch-size", "16", "--lr", "0.3",
              "--whiten-bias-epochs", "1", "--precision", "fp32")
    train(train_args(*recipe, name="straight"))
    paused = train(train_args(*recipe, "--stop-after", "1", name="resumed"))
    assert paused["status"] == "paused"
    state = torch.load(tmp_path / "resumed.state.pt", weights_only=True)
    assert set(state["lookahead"]) >= {"whiten.bias", "head.weight"}
    train(["--resume", str(tmp_path / "resumed.state.pt"), "--no-progress"])

    straight = load_checkpoint(tmp_path / "straight.pt")
    resumed = load_checkpoint(tmp_path / "resumed.pt")
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert straight.meta.tta == "flip"
    assert straight.meta.metrics == resumed.meta.metrics
    assert [h["epoch"] for h in resumed_history(tmp_path)] == [1, 2, 3]


def resumed_history(tmp_path) -> list[dict]:
    import json

    return json.loads((tmp_path / "resumed.report.json").read_text())["history"]


def test_the_stem_bias_freezes_after_its_epochs(train_args, tmp_path) -> None:
    recipe = ("--arch", "whitened_vgg", "--epochs", "3", "--batch-size", "16", "--lr", "0.3",
              "--whiten-bias-epochs", "1", "--lookahead-every", "0", "--precision", "fp32")
    train(train_args(*recipe, "--stop-after", "1", name="m"))
    after_one = torch.load(tmp_path / "m.state.pt", weights_only=True)["model"]["whiten.bias"]
    train(["--resume", str(tmp_path / "m.state.pt"), "--no-progress"])
    final = load_checkpoint(tmp_path / "m.pt").model.whiten.bias
    assert torch.equal(final, after_one)
    assert not torch.equal(after_one, torch.zeros_like(after_one))  # it did train at first


def test_each_epoch_records_its_accuracy_and_the_time_so_far(train_args, tmp_path) -> None:
    import json

    train(train_args("--arch", "whitened_vgg", "--batch-size", "16", "--lr", "0.3"))
    report = json.loads((tmp_path / "model.report.json").read_text())
    history = report["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert 0 < history[0]["seconds"] < history[1]["seconds"]
    assert all(0 <= h["val_accuracy"] <= 1 for h in history)
    training = report["meta"]["training"]
    assert training["precision"] in ("fp32", "bf16") and isinstance(training["cpu_flags"], list)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bias-lr-scale", "0"], "--bias-lr-scale must be positive"),
        (["--lookahead-every", "-1"], "--lookahead-every must be 0 or more"),
        (["--whiten-bias-epochs", "-2"], "--whiten-bias-epochs must be 0 or more"),
    ],
)
def test_a_bad_recipe_flag_is_one_clear_line(train_args, extra, message, capsys) -> None:
    assert run.cli(train_args("--arch", "whitened_vgg", *extra)) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}"


@pytest.mark.parametrize(("flag", "valid"), [("--flip-mode", ["random", "alternate"]),
                                             ("--pad-mode", ["zeros", "reflect"]),
                                             ("--schedule", ["onecycle", "cosine", "triangle"]),
                                             ("--tta", ["off", "flip", "multicrop"])])
def test_a_bad_choice_of_a_recipe_mode_lists_the_valid_ones(flag, valid, capsys) -> None:
    with pytest.raises(SystemExit):
        run.get_args_parser().parse_args([flag, "sideways"])
    err = capsys.readouterr().err
    assert "invalid choice: 'sideways'" in err and all(v in err for v in valid)


def test_the_gpu_variant_trains_with_cutout_and_a_cutout_too_big_is_refused(
        train_args, tmp_path, capsys) -> None:
    summary = train(train_args("--arch", "whitened_resvgg", "--epochs", "1", "--batch-size", "16",
                               "--lr", "0.3", "--cutout", "8", "--precision", "fp32"))
    assert summary["status"] == "done"
    assert load_checkpoint(tmp_path / "model.pt").meta.training["cutout"] == 8
    assert run.cli(train_args("--arch", "whitened_vgg", "--cutout", "40")) == 2
    assert "--cutout 40 is larger than the 32px images" in capsys.readouterr().err


def test_the_small_recipe_is_airbench94s_in_pytorchs_terms() -> None:
    args = parse("--arch", "whitened_vgg_small")
    big = parse("--arch", "whitened_vgg")
    # lr 11.5 and decay 0.0153 per 1,024 images, converted as for the big recipe.
    assert args.lr == pytest.approx(11.5 / (1 + 1 / 0.15), rel=1e-2)
    assert args.lr * args.weight_decay == pytest.approx(0.0153 / (1 + 1 / 0.15), rel=1e-2)
    assert args.epochs == 10
    shared = ("batch_size", "momentum", "label_smoothing", "schedule", "tta", "bias_lr_scale",
              "whiten_bias_epochs", "lookahead_every", "flip_mode", "pad_mode", "optimizer")
    assert [getattr(args, k) for k in shared] == [getattr(big, k) for k in shared]
