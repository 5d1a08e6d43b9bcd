"""The recipe table: `--arch NAME` alone picks that architecture's defaults; flags win."""

from __future__ import annotations

import pytest

from training import run


def parse(*argv: str):
    return run.apply_recipe(run.get_args_parser().parse_args(list(argv)))


@pytest.mark.parametrize("arch", sorted(run.RECIPES))
def test_every_recipe_field_comes_from_the_architectures_recipe(arch: str) -> None:
    args = parse("--arch", arch)
    for name in run.RECIPE_FIELDS:
        assert getattr(args, name) == getattr(run.RECIPES[arch], name), name


def test_the_resnet_recipe_differs_from_the_tutorials_where_it_must() -> None:
    tutorial, resnet = parse("--arch", "tutorial_cnn"), parse("--arch", "resnet9")
    assert (tutorial.batch_size, tutorial.lr, tutorial.tta) == (128, 0.02, "off")
    assert (resnet.batch_size, resnet.lr, resnet.tta) == (512, 0.4, "flip")
    assert resnet.patience == 0  # one-cycle to the last epoch


def test_a_flag_on_the_command_line_overrides_the_recipe() -> None:
    args = parse("--arch", "resnet9", "--lr", "0.1", "--epochs", "3", "--tta", "off",
                 "--patience", "5")
    assert (args.lr, args.epochs, args.tta, args.patience) == (0.1, 3, "off", 5)
    assert args.batch_size == 512  # untouched fields still come from the recipe


def test_the_help_shows_each_architectures_default() -> None:
    text = " ".join(run.get_args_parser().format_help().split())
    assert "tutorial_cnn 0.02" in text and "resnet9 0.4" in text


def test_compile_auto_stays_eager_on_the_cpu_and_on_off_are_obeyed() -> None:
    import torch

    cpu = torch.device("cpu")
    assert run.use_compile("auto", cpu) is False
    assert run.use_compile("on", cpu) is True
    assert run.use_compile("off", torch.device("cuda")) is False
