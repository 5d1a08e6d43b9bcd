"""--train-batchnorm: the tutorial CNN trains with BatchNorm and ships as the plain network."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from models.architectures import TutorialCNN
from models.checkpoint import load_checkpoint
from training import run
from training.batchnorm_fold import fold_into, with_batchnorm
from training.resume import load_state


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters far from a fresh BatchNorm's, some scales
    negative, so folding has real work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


def test_a_batchnorm_follows_every_layer_but_the_last() -> None:
    plain = TutorialCNN(10)
    expanded = with_batchnorm(plain)
    kinds = [type(m).__name__ for m in expanded.model]
    assert kinds == ["Conv2d", "BatchNorm2d", "MaxPool2d", "Conv2d", "BatchNorm2d", "MaxPool2d",
                     "Conv2d", "BatchNorm2d", "MaxPool2d", "Flatten", "Linear", "BatchNorm1d",
                     "Linear"]
    assert len(plain.model) == 9  # the original is left as it was


def test_folding_gives_the_plain_network_the_same_outputs() -> None:
    torch.manual_seed(0)
    expanded = with_batchnorm(TutorialCNN(10))
    _randomise_norms(expanded, seed=1)
    expanded.eval()
    x = torch.randn(4, 3, 32, 32)
    plain = fold_into(expanded, TutorialCNN(10)).eval()
    torch.testing.assert_close(plain(x), expanded(x), rtol=1e-4, atol=1e-4)
    # the tutorial's own keys, so its loading code takes the file with strict=True
    assert plain.state_dict().keys() == TutorialCNN(10).state_dict().keys()
    assert any(isinstance(m, nn.BatchNorm2d) for m in expanded.modules())  # not folded in place


def test_folding_into_another_network_is_refused() -> None:
    expanded = with_batchnorm(TutorialCNN(10))
    other = nn.Sequential(nn.Conv2d(3, 32, 5), nn.Flatten(), nn.Linear(10, 10))
    with pytest.raises(ValueError, match="do not match"):
        fold_into(expanded.eval(), other)


def test_a_run_trains_with_batchnorm_and_ships_the_plain_network(train_args, tmp_path) -> None:
    args = run.get_args_parser().parse_args(
        train_args("--train-batchnorm", "on", "--epochs", "3", "--precision", "fp32"))
    run.main(args)
    state = load_state(tmp_path / "model.state.pt")
    assert "model.1.running_mean" in state["model"]  # it trained with the BatchNorms
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.meta.arch == "tutorial_cnn"
    assert loaded.model.state_dict().keys() == TutorialCNN(3).state_dict().keys()
    # The report's accuracy is measured on the folded network, the history's on the unfolded
    # one at the best epoch: the same function, so the same answers.
    report = json.loads((tmp_path / "model.report.json").read_text())
    best = loaded.meta.training["best_epoch"]
    assert report["validation"]["val_accuracy"] == pytest.approx(
        report["history"][best - 1]["val_accuracy"], abs=1e-4)


def test_resuming_a_batchnorm_run_equals_a_straight_run(straight_and_resumed) -> None:
    recipe = ("--train-batchnorm", "on", "--epochs", "3", "--precision", "fp32")
    straight, resumed = straight_and_resumed(*recipe)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_batchnorm_on_a_normalised_network_is_one_clear_line(train_args, capsys) -> None:
    assert run.cli(train_args("--arch", "whitened_vgg_small", "--train-batchnorm", "on")) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --train-batchnorm on is for tutorial_cnn and vgg16; whitened_vgg_small has "
        "its own normalisation")
