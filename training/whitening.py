"""Fit a patch-whitening convolution to the training images (airbench's first layer).

The covariance of all k×k patches has eigenvectors v_i and eigenvalues λ_i; filters
v_i / sqrt(λ_i + eps) make the patches' coordinates uncorrelated with unit variance. The layer
holds those filters and their negatives (the GELU after it keeps both signs), stays frozen, and
only its bias trains, for the recipe's first epochs.
"""

from __future__ import annotations

import torch
from torch import nn

WHITEN_EPS = 5e-4  # keeps the near-zero eigenvalues of flat patches from blowing up


def patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """Every size×size patch of a float (N, C, H, W) batch, as rows of C·size·size values."""
    c = images.shape[1]
    unfolded = images.unfold(2, size, 1).unfold(3, size, 1)  # N, C, H', W', size, size
    return unfolded.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


@torch.no_grad()
def fit_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """Set `conv`'s weights to whiten the patches of `images` (normalised float, N×C×H×W).

    `conv` needs 2·C·k² output channels for its k×k kernel: the eigenvector filters, then
    their negatives. Its bias is left as it is."""
    c_out, c_in, k, _ = conv.weight.shape
    dims = c_in * k * k
    if c_out != 2 * dims:
        raise ValueError(f"a {k}×{k} whitening conv on {c_in} channels needs {2 * dims} "
                         f"outputs, this one has {c_out}")
    rows = patches(images.float(), k).double()
    covariance = rows.T @ rows / len(rows)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    # Largest eigenvalue first; eigenvectors are the columns.
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps).view(-1, 1))
    filters = filters.reshape(dims, c_in, k, k).to(conv.weight.dtype)
    conv.weight.copy_(torch.cat([filters, -filters]))
