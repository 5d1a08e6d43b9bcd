"""Distillation: the loss by hand, a frozen teacher, and a tiny run that uses one."""

from __future__ import annotations

import math

import pytest
import torch

from models.architectures import build_model
from models.checkpoint import load_checkpoint
from training import run
from training.distill import Teacher, distillation_loss


def softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def test_the_loss_matches_a_hand_computation_on_made_up_logits() -> None:
    student = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]]
    teacher = [[3.0, 1.0, 0.0], [0.0, 2.0, 0.0]]
    labels = [0, 2]
    alpha, t = 0.7, 2.0
    ce = sum(-math.log(softmax(s, 1.0)[y]) for s, y in zip(student, labels, strict=True)) / 2
    kl = sum(
        sum(p * math.log(p / q) for p, q in zip(softmax(te, t), softmax(s, t), strict=True))
        for s, te in zip(student, teacher, strict=True)
    ) / 2
    expected = (1 - alpha) * ce + alpha * t * t * kl
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels),
                            alpha=alpha, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy_and_a_perfect_copy_has_no_kl() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5]])
    labels = torch.tensor([2])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(distillation_loss(logits, logits + 5, labels, alpha=0.0,
                                         temperature=3.0), ce)
    # Shifting every logit by the same amount changes no probability: the KL term is 0.
    assert float(distillation_loss(logits, logits + 5, labels, alpha=1.0,
                                   temperature=3.0)) == pytest.approx(0.0, abs=1e-6)


def test_the_teacher_gets_no_gradient_and_stays_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = build_model("resnet9", 3)
    teacher = Teacher(net, [0.5] * 3, [0.25] * 3, [0.5] * 3, [0.25] * 3)
    student = build_model("tutorial_cnn", 3)
    student.train()
    teacher.train()  # what DDP or a careless caller does; BatchNorm must not move
    before = net.features[0][1].running_mean.clone()
    x = torch.randn(4, 3, 32, 32)
    loss = distillation_loss(student(x), teacher(x), torch.tensor([0, 1, 2, 0]),
                             alpha=0.5, temperature=2.0)
    loss.backward()
    assert not teacher.training and not net.training
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert torch.equal(net.features[0][1].running_mean, before)


def test_the_teacher_sees_pixels_in_its_own_normalisation() -> None:
    seen = []
    probe = torch.nn.Module()
    probe.forward = lambda x: seen.append(x) or x.mean(dim=(2, 3))
    teacher = Teacher(probe, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.0] * 3, [1.0] * 3)
    pixels = torch.rand(1, 3, 4, 4)
    teacher((pixels - 0.5) / 0.25)  # what the student's batches hold
    torch.testing.assert_close(seen[0], pixels)  # the teacher's mean 0, std 1


def test_a_tiny_run_distils_from_a_teacher_and_records_it(train_args, tmp_path) -> None:
    run.main(run.get_args_parser().parse_args(train_args("--epochs", "1", name="teacher")))
    argv = train_args("--epochs", "1", "--teacher", str(tmp_path / "teacher.pt"),
                      "--distill-alpha", "0.5", "--distill-temperature", "2", name="student")
    summary = run.main(run.get_args_parser().parse_args(argv))
    assert summary["status"] == "done"
    training = load_checkpoint(tmp_path / "student.pt").meta.training
    assert training["teacher"] == "teacher.pt"  # a name, not the path
    assert (training["distill_alpha"], training["distill_temperature"]) == (0.5, 2.0)


def test_a_teacher_with_other_classes_is_refused(train_args, tmp_path) -> None:
    from models.checkpoint import CheckpointMeta, save_checkpoint

    save_checkpoint(tmp_path / "t.pt", build_model("tutorial_cnn", 2),
                    CheckpointMeta(arch="tutorial_cnn", classes=["x", "y"], input_size=32,
                                   mean=[0.0] * 3, std=[1.0] * 3))
    argv = train_args("--teacher", str(tmp_path / "t.pt"))
    with pytest.raises(ValueError, match="classes.*differ"):
        run.main(run.get_args_parser().parse_args(argv))


def test_a_teacher_that_held_out_other_images_is_refused(train_args, tmp_path) -> None:
    run.main(run.get_args_parser().parse_args(
        train_args("--epochs", "1", "--seed", "3", name="teacher")))
    student = ("--epochs", "1", "--lr", "0.01", "--precision", "fp32",
               "--teacher", str(tmp_path / "teacher.pt"))
    with pytest.raises(ValueError, match="held out other images.*split seed 3.*split seed 0"):
        run.main(run.get_args_parser().parse_args(train_args(*student, name="s1")))
    # The same held-out images under another init seed: accepted, and recorded as such.
    summary = run.main(run.get_args_parser().parse_args(
        train_args(*student, "--seed", "5", "--split-seed", "3", name="s2")))
    assert summary["status"] == "done"
    meta = load_checkpoint(tmp_path / "s2.pt").meta
    assert meta.data["split_seed"] == 3 and meta.training["seed"] == 5


def test_the_split_seed_alone_decides_which_images_are_held_out(
        train_args, tmp_path, monkeypatch) -> None:
    from training import data

    held_out = {}

    def spy(labels, fraction, seed):
        train_idx, val_idx = data.stratified_split(labels, fraction, seed)
        held_out[seed] = val_idx
        return train_idx, val_idx

    monkeypatch.setattr(run, "stratified_split", spy)
    for extra, name in ((("--seed", "1", "--split-seed", "7"), "a"),
                        (("--seed", "2", "--split-seed", "7"), "b"), (("--seed", "1"), "c")):
        run.main(run.get_args_parser().parse_args(train_args("--epochs", "1", *extra,
                                                             name=name)))
    assert set(held_out) == {7, 1}  # a and b asked for the same split, c for its seed's
    assert not torch.equal(held_out[7], held_out[1])
    assert load_checkpoint(tmp_path / "b.pt").meta.data["split_seed"] == 7
