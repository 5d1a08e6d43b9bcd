"""The checkpoint format: round trip with weights_only=True, atomic writes, clear refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.architectures import build_model
from models.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from models.classes import CIFAR10_CLASSES


def meta(**overrides) -> CheckpointMeta:
    fields = dict(arch="tutorial_cnn", classes=list(CIFAR10_CLASSES), input_size=32,
                  mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], temperature=1.5,
                  metrics={"val_accuracy": 0.7}, epochs=3, data={"dataset": "test"})
    fields.update(overrides)
    return CheckpointMeta(**fields)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("tutorial_cnn", 10)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, meta())
    return path, model


def test_checkpoint_is_a_plain_dict_that_loads_with_weights_only(saved) -> None:
    path, model = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    assert set(raw) == {"format", "state_dict", "meta"}
    for key, value in model.state_dict().items():
        assert torch.equal(raw["state_dict"][key], value)
    for field in ("arch", "classes", "input_size", "mean", "std", "temperature", "metrics",
                  "epochs", "data", "torch_version", "created_at"):
        assert field in raw["meta"]


def test_load_checkpoint_rebuilds_the_same_network_in_eval_mode(saved) -> None:
    path, model = saved
    loaded = load_checkpoint(path, "cpu")
    assert not loaded.model.training
    assert loaded.meta.temperature == 1.5
    assert loaded.meta.mean == [0.49, 0.48, 0.45]
    assert len(loaded.sha256) == 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model.eval()(x))


def test_a_checkpoint_is_readable_by_other_users(saved) -> None:
    # A service running as another uid, or a container with a read-only mount, must read it.
    assert saved[0].stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_previous_checkpoint_intact(saved, monkeypatch) -> None:
    path, _ = saved
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, build_model("tutorial_cnn", 10), meta())
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_a_bare_tutorial_state_dict_loads_with_the_tutorial_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tudui_29.pth"
    torch.save(build_model("tutorial_cnn", 10).state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.meta.arch == "tutorial_cnn"
    assert loaded.meta.classes == list(CIFAR10_CLASSES)
    assert loaded.meta.mean == [0.0, 0.0, 0.0] and loaded.meta.std == [1.0, 1.0, 1.0]
    assert loaded.meta.temperature == 1.0


def test_a_ddp_state_dict_prefix_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "ddp.pt"
    state = {f"module.{k}": v for k, v in build_model("tutorial_cnn", 10).state_dict().items()}
    torch.save(state, path)
    assert load_checkpoint(path).meta.arch == "tutorial_cnn"


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil(marker), "meta": {}}, path)
    with pytest.raises(CheckpointError, match="refused: loading it would run code"):
        load_checkpoint(path)
    assert not marker.exists()


def _write(tmp_path: Path, name: str, obj=None, raw: bytes | None = None) -> Path:
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.pt", "no such file"),
        (lambda d: d, "not a regular file"),
        (lambda d: _write(d, "text.pt", raw=b"hello, not a checkpoint"),
         "not a PyTorch checkpoint"),
        (lambda d: _write(d, "empty.pt", raw=b""), "not a PyTorch checkpoint"),
        (lambda d: _write(d, "list.pt", [1, 2, 3]), "not a checkpoint: expected a dict"),
        (lambda d: _write(d, "whole.pt", build_model("tutorial_cnn", 10)),
         "refused: .*TutorialCNN.*training.convert"),
        (lambda d: _write(d, "arch.pt", {"state_dict": {"w": torch.zeros(1)},
                                         "meta": {**meta().to_dict(), "arch": "resnet"}}),
         "bad meta: unknown architecture 'resnet'"),
        (lambda d: _write(d, "temp.pt", {"state_dict": {"w": torch.zeros(1)},
                                         "meta": {**meta().to_dict(), "temperature": -1.0}}),
         "bad meta: temperature must be a positive number"),
        (lambda d: _write(d, "nometa.pt", {"state_dict": {"w": torch.zeros(1)},
                                           "meta": {"arch": "tutorial_cnn"}}),
         "bad meta: meta lacks classes, input_size, mean, std"),
        (lambda d: _write(d, "shape.pt", {
            "state_dict": build_model("tutorial_cnn", 5).state_dict(), "meta": meta().to_dict()}),
         r"do not fit tutorial_cnn with 10 classes: shape mismatch model.8.weight \(5, 64\)"),
        (lambda d: _write(d, "keys.pt", {"state_dict": {"w": torch.zeros(1)},
                                         "meta": meta().to_dict()}),
         "missing model.0.weight"),
    ],
    ids=["missing", "directory", "text", "empty", "list", "whole-model", "unknown-arch",
         "bad-temperature", "incomplete-meta", "shape-mismatch", "wrong-keys"],
)
def test_unusable_checkpoints_fail_with_the_file_and_the_reason(tmp_path, make, reason) -> None:
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.match(reason)


def test_an_unavailable_device_is_a_checkpoint_error(saved) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CheckpointError, match="CUDA is not available"):
        load_checkpoint(saved[0], "cuda")


def test_a_torch_version_object_in_meta_still_saves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("tutorial_cnn", 10), meta(torch_version=torch.__version__))
    assert load_checkpoint(path).meta.torch_version == str(torch.__version__)


def test_read_checkpoint_does_not_build_a_network(saved) -> None:
    state, m, sha = read_checkpoint(saved[0])
    assert m.arch == "tutorial_cnn" and "model.0.weight" in state and len(sha) == 64


def test_a_checkpoint_without_tta_in_its_meta_loads_with_tta_off(tmp_path: Path) -> None:
    model = build_model("tutorial_cnn", 10)
    raw = meta().to_dict()
    del raw["tta"]  # written before the field existed
    torch.save({"format": FORMAT, "state_dict": model.state_dict(), "meta": raw},
               tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").meta.tta == "off"


def test_public_meta_holds_names_not_the_training_machines_paths() -> None:
    old = meta(
        data={"dataset": "folder", "source": "/root/.cache/cifar10/train", "train_images": 9},
        training={"data_dir": "/root/.cache/cifar10", "output": "/tmp/expB/m.pt",
                  "logdir": "runs/cifar10_x", "teacher": "C:\\ckpt\\t.pt", "lr": 0.02},
    )
    public = old.public_dict()
    assert public["data"]["source"] == "train"
    assert public["training"] == {"data_dir": "cifar10", "output": "m.pt",
                                  "logdir": "cifar10_x", "teacher": "t.pt", "lr": 0.02}
    assert public["classes"] == old.classes
    assert "/" not in repr(public["data"]) + repr(public["training"])
