"""Temperature scaling and ECE."""

from __future__ import annotations

import pytest
import torch

from training.calibration import expected_calibration_error, fit_temperature


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 10, generator=gen) * 3
    true_t = 2.5
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=gen).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_ece_of_a_hand_computed_example() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, 0])
    # bin of 0.9: accuracy 0.5, confidence 0.9 → 0.4 × 2/4; bin of 0.6: 1.0 vs 0.6 → 0.4 × 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)


def test_a_perfectly_calibrated_model_has_zero_ece() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == 0.0
