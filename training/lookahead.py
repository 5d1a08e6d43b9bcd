"""Lookahead over the weights (airbench's "EMA"): every few steps the network is pulled back
toward a slow copy of itself, and at the end it becomes that copy.

Every `every` steps: slow ← slow + (1 − d)·(net − slow), then net ← slow, with
d = decay^every · (step / total)³. Early in the run d ≈ 0 and the slow copy simply follows the
network; toward the end d → decay^every and the steps are averaged, which smooths the last,
noisy part of the schedule. BatchNorm's running statistics are averaged the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, total_steps: int, every: int = 5,
                 decay: float = 0.95) -> None:
        if total_steps < 1 or every < 1 or not 0.0 <= decay < 1.0:
            raise ValueError("lookahead needs total_steps ≥ 1, every ≥ 1 and 0 ≤ decay < 1")
        self.total_steps, self.every, self.decay = total_steps, every, decay
        self.slow = {k: v.detach().clone() for k, v in _floats(model).items()}

    def weight(self, step: int) -> float:
        """d at `step` (1-based): how much of the slow copy is kept."""
        return self.decay ** self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number `step` (1-based). The last step hands the network
        the slow copy itself."""
        if step >= self.total_steps:
            self._pull(model, 1.0)
        elif step % self.every == 0:
            self._pull(model, self.weight(step))

    def _pull(self, model: nn.Module, keep: float) -> None:
        for name, value in _floats(model).items():
            slow = self.slow[name]
            slow.lerp_(value, 1.0 - keep)
            value.copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.slow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.slow[name].copy_(value)


def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the model's state (weights, biases, BN statistics)."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items()
            if v.is_floating_point()}
