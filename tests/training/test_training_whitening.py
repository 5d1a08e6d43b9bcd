"""The whitening stem: fitted filters whiten the patches they were fitted on and never train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.architectures import WhitenedVGG
from training import run
from training.whitening import fit_whitening, patches


def correlated_images(n: int = 64, size: int = 12) -> torch.Tensor:
    """Images whose channels and neighbouring pixels are strongly correlated, as photos are."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, size, size, generator=gen)
    base = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = 0.3 * torch.randn(n, 3, size, size, generator=gen)
    return base.expand(n, 3, size, size) * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1) + noise


def test_the_fitted_stem_makes_the_patch_covariance_the_identity() -> None:
    images = correlated_images()
    raw = patches(images, 2)
    before = raw.T @ raw / len(raw)
    assert (before - torch.eye(12)).abs().max() > 0.5  # far from white to begin with

    conv = torch.nn.Conv2d(3, 24, 2)
    fit_whitening(conv, images, eps=1e-6)
    out = F.conv2d(images, conv.weight)  # no bias: the covariance of the filters alone
    rows = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = rows.T @ rows / len(rows)
    torch.testing.assert_close(covariance, torch.eye(12), atol=2e-3, rtol=0)
    # The other 12 filters are the negatives of the first 12.
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])


def test_a_stem_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 24 outputs, this one has 16"):
        fit_whitening(torch.nn.Conv2d(3, 16, 2), correlated_images(4))


def test_the_frozen_stem_gets_no_update_from_the_recipes_optimiser() -> None:
    model = WhitenedVGG(3, widths=(8, 8, 8))
    fit_whitening(model.whiten, correlated_images(8, 32))
    frozen = model.whiten.weight.detach().clone()
    args = run.apply_recipe(run.get_args_parser().parse_args(["--arch", "whitened_vgg"]))
    optimizer = run._make_optimizer(model, args)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    assert torch.equal(model.whiten.weight, frozen)
    assert all(p is not model.whiten.weight
               for g in optimizer.param_groups for p in g["params"])
