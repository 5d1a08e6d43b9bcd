"""Cached teacher views: each stored view's logits are the teacher's on exactly the pixels the
student is shown, the cache is reused only for the same inputs, and a run uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.preprocess import normalize
from training import run
from training.augment import crop_flip, draw_crop_flip, random_crop_flip
from training.engine import Batches
from training.teacher_views import cache_key, compute_views, load_or_compute_views

CPU = torch.device("cpu")
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


class PixelTeacher(torch.nn.Module):
    """A teacher whose logits are a fixed linear map of the pixels, so any change of view shows."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 4)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.proj(x.flatten(1))


def tiny_images(n: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def views_for(teacher: PixelTeacher, images: torch.Tensor, indices: torch.Tensor, k: int = 3):
    return compute_views(teacher, images, indices, k=k, padding=2, flip=True, seed=0, mean=MEAN,
                         std=STD, device=CPU, precision="fp32", channels_last=False,
                         progress=False, batch_size=7)


def test_a_drawn_view_replays_to_the_pixels_random_crop_flip_makes() -> None:
    images = tiny_images()
    drawn = draw_crop_flip(len(images), 3, True, torch.Generator().manual_seed(5))
    replayed = crop_flip(images, 3, *drawn)
    assert torch.equal(replayed, random_crop_flip(images, 3, True,
                                                  torch.Generator().manual_seed(5)))
    assert drawn[2].any() and not drawn[2].all()  # both mirrored and plain views occur


def test_every_batch_carries_the_teachers_logits_for_exactly_the_pixels_it_holds() -> None:
    images, labels = tiny_images(), torch.arange(40) % 4
    train_idx = torch.arange(0, 40, 2)  # the odd images are "held out"
    teacher = PixelTeacher()
    views = views_for(teacher, images, train_idx)
    assert views.logits.shape == (3, 40, 4)
    assert not views.logits[:, 1::2].any()  # nothing computed for held-out images
    batches = Batches(images, labels, train_idx, 5, MEAN, STD, 2, True,
                      torch.Generator().manual_seed(0), False, views=views)
    seen = 0
    for x, y, taught in batches:
        torch.testing.assert_close(taught, teacher(x), rtol=1e-5, atol=1e-5)
        seen += len(y)
    assert seen == 20


def test_views_differ_between_k_and_each_epoch_draws_among_them() -> None:
    images = tiny_images()
    views = views_for(PixelTeacher(), images, torch.arange(40), k=4)
    # Four views of an image are not all the same crop (4 of 50 offsets, 2 mirrors).
    assert (views.dy != views.dy[0]).any() or (views.dx != views.dx[0]).any()
    idx = torch.arange(40).repeat(10)
    dy, dx, mirror, logits = views.draw(idx, torch.Generator().manual_seed(0))
    chosen = {(int(a), int(b), bool(c)) for a, b, c in zip(dy[idx == 0], dx[idx == 0],
                                                            mirror[idx == 0], strict=True)}
    stored = {(int(views.dy[v, 0]), int(views.dx[v, 0]), bool(views.mirror[v, 0]))
              for v in range(4)}
    assert chosen <= stored and len(chosen) > 1


def test_the_cache_is_reused_for_the_same_inputs_only(tmp_path: Path) -> None:
    images, indices = tiny_images(), torch.arange(40)
    teacher_file = tmp_path / "teacher.pt"
    teacher_file.write_bytes(b"weights")
    teacher = PixelTeacher()

    def key(**change):
        kw = dict(k=3, padding=2, flip=True, seed=0, precision="fp32") | change
        return cache_key(teacher_file, images, indices, **kw)

    first = load_or_compute_views(tmp_path, key(), lambda: views_for(teacher, images, indices),
                                  write=True)
    calls = teacher.calls
    again = load_or_compute_views(tmp_path, key(), lambda: views_for(teacher, images, indices),
                                  write=True)
    assert teacher.calls == calls  # loaded, not computed
    assert torch.equal(again.logits, first.logits) and torch.equal(again.dx, first.dx)
    keys = {key(), key(k=4), key(seed=1), key(padding=4), key(flip=False), key(precision="bf16")}
    assert len(keys) == 6
    teacher_file.write_bytes(b"other weights")
    assert key() not in keys


def test_a_tiny_run_distils_from_stored_views_and_records_k(train_args, tmp_path) -> None:
    run.main(run.get_args_parser().parse_args(train_args("--epochs", "1", name="teacher")))
    argv = train_args("--teacher", str(tmp_path / "teacher.pt"), "--teacher-views", "2",
                      "--distill-alpha", "0.5", "--distill-temperature", "2", name="student")
    assert run.main(run.get_args_parser().parse_args(argv))["status"] == "done"
    assert load_checkpoint(tmp_path / "student.pt").meta.training["teacher_views"] == 2
    assert len(list((tmp_path / "cache").glob("teacher-views-*.pt"))) == 1


@pytest.mark.parametrize(("extra", "message"), [
    (["--teacher-views", "4"], "needs --teacher"),
    (["--teacher", "t.pt", "--teacher-views", "-1"], "must be 0"),
])
def test_bad_teacher_views_flags_are_refused(train_args, extra, message) -> None:
    with pytest.raises(ValueError, match=message):
        run.main(run.get_args_parser().parse_args(train_args(*extra)))


def test_normalisation_is_the_students(tmp_path: Path) -> None:
    # The stored logits come from normalised pixels, the same the student trains on.
    images = tiny_images(4)
    seen = []
    probe = torch.nn.Module()
    probe.forward = lambda x: seen.append(x) or x.flatten(1)[:, :2]
    compute_views(probe, images, torch.arange(4), k=1, padding=0, flip=False, seed=0,
                  mean=MEAN, std=STD, device=CPU, precision="fp32", channels_last=False,
                  progress=False)
    torch.testing.assert_close(seen[0], normalize(images, MEAN, STD))
