"""Muon for the convolution filters, Nesterov SGD for everything else, in one optimizer.

Muon (Jordan, 2024; airbench94_muon) replaces a filter's SGD step by its momentum with the
singular values pushed toward 1: every direction of the update moves at the same rate, which
reaches airbench94's accuracy in about 8 epochs instead of 9.9. Each filter tensor is first
rescaled to norm √(out channels); BatchNorm follows every conv, so the scale carries no
information and the fixed norm stands in for weight decay. One optimizer (groups marked
`muon`) keeps the learning-rate schedule, `state_dict` and `--resume` as they are for SGD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Quintic Newton–Schulz coefficients chosen for the steepest slope at zero (Jordan, 2024):
# three steps leave the singular values within about [0.5, 1.5], which trains as well as 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3
MUON_MOMENTUM = 0.6  # airbench94_muon's, with Nesterov


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """`g` (2-D) with its singular values moved toward 1 and its singular vectors kept."""
    if g.ndim != 2:
        raise ValueError(f"orthogonalize takes a matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.float() / (g.float().norm() + 1e-7)  # largest singular value ≤ 1
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Groups with `muon=True`: Muon (momentum `MUON_MOMENTUM`, no weight decay); the others:
    Nesterov SGD with coupled weight decay, step for step what torch.optim.SGD does."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float,
                 weight_decay: float = 0.0) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "muon": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: ARG002 - Optimizer's signature
        for group in self.param_groups:
            lr = group["lr"]
            momentum = MUON_MOMENTUM if group["muon"] else group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(momentum).add_(g)
                g = g.add(state["momentum_buffer"], alpha=momentum)  # Nesterov
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                    g = orthogonalize(g.reshape(len(g), -1)).view_as(g)
                p.add_(g, alpha=-lr)
