"""Shared by the network tests: trained-looking BatchNorm statistics, and the folding check."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(model: nn.Module, scales: bool = True) -> nn.Module:
    """Every BatchNorm gets non-trivial running statistics and bias (and scale, when it is
    learned: `scales`), as after training; returns the model in eval mode."""
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.4, 2.0)
        bn.bias.data.uniform_(-0.3, 0.3)
        if scales:
            bn.weight.data.uniform_(0.2, 1.5)
    return model.eval()


def assert_folding_keeps_the_logits(model: nn.Module) -> None:
    """Fold the model's BatchNorms: none is left, and the logits do not move."""
    from models.architectures import fold_batchnorm

    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
