"""Lookahead: the pull toward the slow weights, by hand, and the hand-over at the end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.lookahead import Lookahead


def net(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_a_pull_equals_the_hand_computation() -> None:
    model = net(1.0)
    la = Lookahead(model, total_steps=20, every=5, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    for step in range(1, 5):
        la.after_step(model, step)  # not a multiple of 5: nothing happens
    assert torch.equal(model[0].weight, torch.full((1, 2), 3.0))

    la.after_step(model, 5)
    d = 0.9 ** 5 * (5 / 20) ** 3
    expected = 1.0 + (1 - d) * (3.0 - 1.0)
    torch.testing.assert_close(model[0].weight, torch.full((1, 2), expected))
    torch.testing.assert_close(la.slow["0.weight"], torch.full((1, 2), expected))
    assert la.weight(5) == pytest.approx(d)


def test_batchnorm_statistics_are_averaged_and_the_step_counter_is_not() -> None:
    model = net(0.0)
    la = Lookahead(model, total_steps=10, every=5, decay=0.5)
    model.train()(torch.randn(8, 2) * 4 + 2)  # moves running_mean/var, counts one batch
    moved = model[1].running_mean.clone()
    la.after_step(model, 5)
    d = 0.5 ** 5 * (5 / 10) ** 3
    torch.testing.assert_close(model[1].running_mean, (1 - d) * moved)
    assert int(model[1].num_batches_tracked) == 1


def test_the_last_step_hands_the_network_the_slow_copy() -> None:
    model = net(1.0)
    la = Lookahead(model, total_steps=7, every=5, decay=0.95)
    la.after_step(model, 5)
    slow = {k: v.clone() for k, v in la.slow.items()}
    with torch.no_grad():
        model[0].weight.fill_(-4.0)
    la.after_step(model, 7)
    assert torch.equal(model[0].weight, slow["0.weight"])


def test_the_state_round_trips() -> None:
    model = net(2.0)
    la = Lookahead(model, total_steps=10)
    saved = la.state_dict()
    other = Lookahead(net(0.0), total_steps=10)
    other.load_state_dict(saved)
    assert all(torch.equal(other.slow[k], v) for k, v in saved.items())


@pytest.mark.parametrize("kwargs", [dict(total_steps=0), dict(total_steps=5, every=0),
                                    dict(total_steps=5, decay=1.0)])
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="lookahead needs"):
        Lookahead(net(0.0), **kwargs)
