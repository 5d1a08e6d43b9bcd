"""Datasets: image folders, the stratified split, channel statistics, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import data
from training.data import DatasetError, channel_stats, load_dataset, stratified_split


def test_folder_layout_gives_sorted_classes_and_uint8_images(tiny_dataset: Path) -> None:
    train, test = load_dataset("folder", tiny_dataset, 32, cache_dir=None, download=False,
                               progress=False)
    assert train.classes == ["blue", "green", "red"]
    assert train.images.shape == (180, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [60, 60, 60]
    assert test is not None and len(test) == 30
    # class 0 is blue: its images are mostly blue
    blue = train.images[train.labels == 0].float().mean(dim=(0, 2, 3))
    assert blue[2] > blue[0] and blue[2] > blue[1]


def test_the_split_holds_out_the_same_fraction_of_every_class_reproducibly() -> None:
    labels = torch.arange(4).repeat_interleave(torch.tensor([100, 50, 30, 20]))
    train, val = stratified_split(labels, 0.1, seed=3)
    assert torch.bincount(labels[val]).tolist() == [10, 5, 3, 2]
    assert len(set(train.tolist()) & set(val.tolist())) == 0
    assert len(train) + len(val) == len(labels)
    again_train, again_val = stratified_split(labels, 0.1, seed=3)
    assert torch.equal(val, again_val)
    assert not torch.equal(val, stratified_split(labels, 0.1, seed=4)[1])


def test_channel_stats_are_mean_and_std_in_unit_range() -> None:
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[0, 0] = 255  # channel 0: half the pixels 1.0, half 0.0
    images[:, 1] = 51  # channel 1: constant 0.2
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 0.2, 0.0])
    assert std[0] == pytest.approx(0.5345, abs=1e-3)  # sample std of four 1s and four 0s
    assert std[1] == pytest.approx(1 / 255, abs=1e-4)  # constant channel: kept finite


def test_an_unreadable_image_names_the_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.png").write_bytes(b"not a png")
    (tmp_path / "train" / "b" / "y.png").write_bytes(b"not a png either")
    with pytest.raises(DatasetError, match=r"cannot read image .*x\.png"):
        load_dataset("folder", tmp_path, 32, cache_dir=None, download=False, progress=False)


def test_one_class_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train" / "only").mkdir(parents=True)
    with pytest.raises(DatasetError, match="one folder per class \\(at least 2\\), found 1"):
        load_dataset("folder", tmp_path, 32, cache_dir=None, download=False, progress=False)


def test_cifar10_offline_says_how_to_use_a_local_copy(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError, match="could not be downloaded.*--dataset folder"):
        load_dataset("cifar10", tmp_path, 32, cache_dir=None, download=True, progress=False)


def test_cache_key_changes_when_a_file_changes(tiny_dataset: Path, tmp_path: Path) -> None:
    files = [(p, 0) for p in sorted((tiny_dataset / "train" / "red").iterdir())]
    copy = tmp_path / "x.png"
    copy.write_bytes(files[0][0].read_bytes())
    before = data._fingerprint([(copy, 0)], 32)
    copy.write_bytes(files[1][0].read_bytes())
    assert data._fingerprint([(copy, 0)], 32) != before
    assert data._fingerprint([(copy, 0)], 64) != data._fingerprint([(copy, 0)], 32)
