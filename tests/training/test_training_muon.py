"""Muon for conv filters: the orthogonalisation, the update by hand, SGD for the rest, resume."""

from __future__ import annotations

import pytest
import torch

from training import run
from training.muon import MUON_MOMENTUM, MuonSGD, orthogonalize


def singular_values(m: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(m.double())


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (32, 32)])
def test_orthogonalize_evens_the_singular_values_and_keeps_their_vectors(shape) -> None:
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape)))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape)))
    spread = torch.logspace(0, -1, min(shape))  # condition number 10
    g = u @ torch.diag(spread) @ v.T
    out = orthogonalize(g)
    s = singular_values(out)  # three steps: within about [0.5, 1.5], not exactly 1
    assert float(s.min()) > 0.5 and float(s.max()) < 1.5 and s.max() / s.min() < 3
    # Same singular vectors: uᵀ·out·v is diagonal, with positive entries.
    core = u.T @ out @ v
    off = core - torch.diag(torch.diagonal(core))
    assert float(off.abs().max()) < 1e-4 and bool((torch.diagonal(core) > 0).all())


def test_orthogonalize_refuses_a_tensor_that_is_not_a_matrix() -> None:
    with pytest.raises(ValueError, match="takes a matrix"):
        orthogonalize(torch.ones(2, 3, 4))


def test_a_muon_step_equals_the_hand_computation() -> None:
    torch.manual_seed(1)
    w = torch.randn(4, 3, 3, 3)
    p = torch.nn.Parameter(w.clone())
    opt = MuonSGD([{"params": [p], "muon": True}], lr=0.1, momentum=0.9, weight_decay=0.5)
    grads = [torch.randn_like(w) for _ in range(2)]
    buf = None
    for g in grads:
        p.grad = g.clone()
        opt.step()
        buf = g.clone() if buf is None else MUON_MOMENTUM * buf + g  # no decay under Muon
        w = w * 2.0 / w.norm()  # √4 output channels
        w = w - 0.1 * orthogonalize((g + MUON_MOMENTUM * buf).reshape(4, -1)).view_as(w)
        assert torch.allclose(p.detach(), w, atol=1e-6)


def test_the_other_groups_step_exactly_as_torch_sgd() -> None:
    torch.manual_seed(2)
    w = torch.randn(5, 7)
    ours, theirs = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    opt_ours = MuonSGD([ours], lr=0.3, momentum=0.85, weight_decay=1e-2)
    opt_theirs = torch.optim.SGD([theirs], lr=0.3, momentum=0.85, weight_decay=1e-2,
                                 nesterov=True)
    for _ in range(3):
        g = torch.randn_like(w)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    assert torch.allclose(ours.detach(), theirs.detach(), atol=1e-6)


def test_muon_takes_the_conv_filters_and_sgd_keeps_biases_and_head() -> None:
    from models.architectures import WhitenedVGG

    args = run.apply_recipe(run.get_args_parser().parse_args(
        ["--arch", "whitened_vgg", "--optimizer", "muon"]))
    model = WhitenedVGG(10, widths=(8, 8, 8))
    opt = run._make_optimizer(model, args)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"filters", "whiten_bias", "norm_biases", "weights"}
    assert groups["filters"]["muon"] and groups["filters"]["lr"] == args.muon_lr == 0.24
    assert len(groups["filters"]["params"]) == 6  # the six 3×3 convs, not the frozen stem
    assert all(p.ndim == 4 for p in groups["filters"]["params"])
    assert groups["weights"]["params"] == [model.head.weight] and not groups["weights"]["muon"]
    assert opt.param_groups[-1]["lr"] == args.lr  # the history's lr is still --lr's


def test_resuming_a_muon_run_equals_a_straight_run(straight_and_resumed) -> None:
    recipe = ("--arch", "whitened_vgg_small", "--optimizer", "muon", "--epochs", "3",
              "--batch-size", "16", "--lr", "0.3", "--precision", "fp32")
    straight, resumed = straight_and_resumed(*recipe)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_a_muon_lr_that_is_not_positive_is_one_clear_line(train_args, capsys) -> None:
    assert run.cli(train_args("--optimizer", "muon", "--muon-lr", "0")) == 2
    assert capsys.readouterr().err.strip() == "error: --muon-lr must be positive"
