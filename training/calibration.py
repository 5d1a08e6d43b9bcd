"""Temperature scaling (Guo et al., 2017) and expected calibration error.

The temperature is fitted on the validation set only: it changes how confident the
probabilities are, never which class wins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising NLL of softmax(logits / T) on (logits, labels).

    Optimised over log T with L-BFGS, so T stays positive; the NLL is convex in 1/T.
    """
    logits = logits.detach().to(torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).to(torch.float64)
    confidence = confidence.to(torch.float64)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            ece += gap * in_bin.to(torch.float64).mean()
    return float(ece)
