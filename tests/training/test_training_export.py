"""`python -m training.export`: an ONNX model (and a Triton repository) that answers as the
service does, for every shipped checkpoint and a whitened VGG with multi-crop TTA."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from torch import nn

from app.inference.predictor import Predictor
from models.architectures import build_model
from models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from models.classes import CIFAR10_CLASSES
from models.inference import tta_logits
from models.preprocess import normalize
from training import export
from training.export import LOGITS, OPSET, PIXELS, PROBABILITIES, cli
from training.staging import WriteError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models"
# Every shipped checkpoint, and a whitened VGG built here with multicrop TTA (the shipped one
# serves flip), so all three TTA modes go through the export.
CHECKPOINTS = [*(p.stem for p in sorted(SHIPPED.glob("*.pt"))), "multicrop_whitened_vgg"]


@pytest.fixture(scope="module")
def whitened_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whitened VGG with BatchNorm statistics far from the identity, multi-crop TTA, and
    weights scaled so that its probabilities are far from uniform."""
    torch.manual_seed(0)
    model = build_model("whitened_vgg", 10)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.3, 3.0)
            bn.bias.uniform_(-0.3, 0.3)
        model.whiten.weight.normal_(0, 0.5)
        model.head.weight.normal_(0, 1.0)  # logits of a few units, not hundredths
    meta = CheckpointMeta(arch="whitened_vgg", classes=list(CIFAR10_CLASSES), input_size=32,
                          mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], temperature=0.5,
                          tta="multicrop")
    path = tmp_path_factory.mktemp("whitened") / "cifar10_whitened_vgg.pt"
    save_checkpoint(path, model, meta)
    return path


def _encode(pixels: np.ndarray, fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_files() -> list[bytes]:
    """8 image files: the example photo, then PNGs and JPEGs of other sizes and modes."""
    rng = np.random.default_rng(0)
    files = [(REPO / "examples" / "cat.png").read_bytes()]
    for i, (h, w) in enumerate([(32, 32), (48, 64), (100, 80), (32, 32), (300, 200), (17, 40),
                                (64, 64)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        fmt, mode = [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGBA")][i % 4]
        files.append(_encode(pixels, fmt, mode))
    return files


@dataclass
class Exported:
    checkpoint: Path
    onnx: Path
    repo: Path
    session: onnxruntime.InferenceSession
    predictor: Predictor  # the service's
    pixels: torch.Tensor  # the image files, decoded as the service decodes them


@pytest.fixture(scope="module", params=CHECKPOINTS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             whitened_checkpoint: Path, image_files: list[bytes]) -> Exported:
    name = request.param
    checkpoint = whitened_checkpoint if name == "multicrop_whitened_vgg" \
        else SHIPPED / f"{name}.pt"
    out = tmp_path_factory.mktemp(name)
    assert cli([str(checkpoint), str(out / "model.onnx"), "--triton-repo", str(out / "repo")]) == 0
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10_000_000)
    pixels = torch.stack([predictor.decode(data) for data in image_files])
    session = onnxruntime.InferenceSession(out / "model.onnx",
                                           providers=["CPUExecutionProvider"])
    return Exported(checkpoint, out / "model.onnx", out / "repo", session, predictor, pixels)


def _run(exported: Exported, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    probabilities, logits = exported.session.run([PROBABILITIES, LOGITS],
                                                 {PIXELS: pixels.numpy()})
    return probabilities, logits


def test_onnxruntime_gives_the_services_probabilities_for_decoded_images(
    exported: Exported,
) -> None:
    want = np.array(exported.predictor.predict(list(exported.pixels)))
    got, _ = _run(exported, exported.pixels)
    assert got.shape == want.shape == (8, 10)
    assert np.abs(got - want).max() < 2e-3
    assert (got.argmax(1) == want.argmax(1)).all()


def test_logits_are_the_unfolded_networks_tta_logits_before_the_temperature(
    exported: Exported,
) -> None:
    loaded = load_checkpoint(exported.checkpoint)  # BatchNorm not folded
    meta = loaded.meta
    with torch.inference_mode():
        want = tta_logits(loaded.model, normalize(exported.pixels, meta.mean, meta.std), meta.tta)
    probabilities, logits = _run(exported, exported.pixels)
    np.testing.assert_allclose(logits, want.numpy(), rtol=1e-3, atol=1e-3)
    scaled = torch.from_numpy(logits) / meta.temperature
    np.testing.assert_allclose(probabilities, torch.softmax(scaled, 1).numpy(), atol=1e-6)


def test_a_batch_of_1_and_a_batch_of_64_give_the_same_rows(exported: Exported) -> None:
    eight, _ = _run(exported, exported.pixels)
    one, _ = _run(exported, exported.pixels[:1])
    many, _ = _run(exported, exported.pixels.repeat(8, 1, 1, 1))
    assert one.shape == (1, 10) and many.shape == (64, 10)
    np.testing.assert_allclose(one, eight[:1], atol=1e-5)
    np.testing.assert_allclose(many, np.tile(eight, (8, 1)), atol=1e-5)


def test_the_metadata_round_trips(exported: Exported) -> None:
    model = onnx.load(exported.onnx)
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert exported.session.get_modelmeta().custom_metadata_map == props
    meta = load_checkpoint(exported.checkpoint).meta
    assert json.loads(props["classes"]) == meta.classes
    assert int(props["input_size"]) == meta.input_size
    assert json.loads(props["mean"]) == meta.mean and json.loads(props["std"]) == meta.std
    assert json.loads(props["temperature"]) == meta.temperature
    assert (props["tta"], props["arch"]) == (meta.tta, meta.arch)
    assert props["checkpoint"] == exported.checkpoint.name
    sha256 = hashlib.sha256(exported.checkpoint.read_bytes()).hexdigest()
    assert props["checkpoint_sha256"] == sha256
    assert "before the temperature" in props["logits"]
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_the_graph_takes_uint8_pixels_with_a_dynamic_batch(exported: Exported) -> None:
    graph = onnx.load(exported.onnx).graph
    [pixels] = graph.input
    assert pixels.name == PIXELS
    assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch, *rest = _dims(pixels)
    assert isinstance(batch, str) and rest == [3, 32, 32]
    assert [o.name for o in graph.output] == [PROBABILITIES, LOGITS]
    for output in graph.output:
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert _dims(output) == [batch, 10]


TRITON_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def _tensors(config: str, section: str) -> list[dict[str, object]]:
    """The `input [...]` or `output [...]` entries of a config.pbtxt, simply parsed."""
    [block] = re.findall(rf"^{section} \[(.*?)^\]", config, re.S | re.M)
    return [
        {"name": re.search(r'name: "([^"]+)"', entry).group(1),
         "data_type": re.search(r"data_type: (\w+)", entry).group(1),
         "dims": [int(d) for d in re.search(r"dims: \[([^\]]*)\]", entry).group(1).split(",")],
         "label_filename": (m.group(1) if (m := re.search(r'label_filename: "([^"]+)"', entry))
                            else None)}
        for entry in re.findall(r"\{(.*?)\}", block, re.S)
    ]


def test_the_triton_config_names_the_graphs_tensors(exported: Exported) -> None:
    name = exported.checkpoint.stem  # the name the service's /v2 serves it under
    folder = exported.repo / name
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (folder / "1" / "model.onnx").read_bytes() == exported.onnx.read_bytes()
    config = (folder / "config.pbtxt").read_text()
    assert re.search(rf'^name: "{name}"$', config, re.M)
    assert re.search(r'^backend: "onnxruntime"$', config, re.M)
    assert re.search(r"^max_batch_size: 32$", config, re.M)
    assert re.search(r"^dynamic_batching \{", config, re.M)
    graph = onnx.load(exported.onnx).graph
    for section, values in (("input", graph.input), ("output", graph.output)):
        assert [(t["name"], t["data_type"], t["dims"]) for t in _tensors(config, section)] == [
            (v.name, TRITON_TYPES[v.type.tensor_type.elem_type], _dims(v)[1:]) for v in values]
    labels = {t["name"]: t["label_filename"] for t in _tensors(config, "output")}
    assert labels == {PROBABILITIES: "labels.txt", LOGITS: None}
    meta = load_checkpoint(exported.checkpoint).meta
    assert (folder / "labels.txt").read_text().splitlines() == meta.classes


def test_exporting_again_replaces_the_triton_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    stale = repo / "tiny" / "2" / "model.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    args = [str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "m.onnx"),
            "--triton-repo", str(repo), "--name", "tiny", "--max-batch-size", "8"]
    assert cli(args) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]
    assert not stale.exists()
    assert "max_batch_size: 8\n" in (repo / "tiny" / "config.pbtxt").read_text()


# --- bad input: one line naming the problem, exit status 2, nothing written -----------------

def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _not_a_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint")
    return [str(tmp_path / "notes.pt"), str(tmp_path / "out.onnx")]


def _unknown_architecture(tmp_path: Path) -> list[str]:
    meta = {"arch": "alexnet", "classes": ["a", "b"], "input_size": 32, "mean": [0.5] * 3,
            "std": [0.5] * 3}
    torch.save({"format": "cnn-serve/1", "state_dict": {"w": torch.zeros(1)}, "meta": meta},
               tmp_path / "alex.pt")
    return [str(tmp_path / "alex.pt"), str(tmp_path / "out.onnx")]


def _output_under_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "plain").write_text("")
    return [str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "plain" / "out.onnx")]


def _output_is_a_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "out.onnx").mkdir()
    return [str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "out.onnx")]


def _output_is_the_checkpoint(tmp_path: Path) -> list[str]:
    (tmp_path / "m.pt").write_bytes((SHIPPED / "cifar10_tutorial_cnn.pt").read_bytes())
    return [str(tmp_path / "m.pt"), str(tmp_path / "m.pt")]


def _triton_repo_is_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "repo").write_text("")
    return [str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "out.onnx"),
            "--triton-repo", str(tmp_path / "repo")]


@pytest.mark.parametrize(("make", "says"), [
    (_not_a_checkpoint, r"notes\.pt'.*not a PyTorch checkpoint"),
    (_unknown_architecture, r"alex\.pt'.*unknown architecture 'alexnet'; choose one of: "),
    (_output_under_a_file, r"cannot write the ONNX file .*plain/out\.onnx: .*plain is not a dir"),
    (_output_is_a_folder, r"cannot write the ONNX file .*out\.onnx: it is a directory"),
    (_output_is_the_checkpoint, r"the output .*m\.pt is the checkpoint itself"),
    (_triton_repo_is_a_file, r"cannot write the Triton repository .*repo: it is not a directory"),
])
def test_bad_input_is_one_line_and_writes_nothing(
    make, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = make(tmp_path)
    before = _files(tmp_path)
    assert cli(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and re.match(rf"error: .*{says}", err), err
    assert _files(tmp_path) == before


def test_a_model_the_exporter_cannot_trace_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no ONNX function for aten::frobnicate\n(long exporter report)")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    repo = tmp_path / "repo"
    repo.mkdir()
    assert cli([str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "out.onnx"),
                "--triton-repo", str(repo)]) == 2
    assert capsys.readouterr().err == (
        "error: cannot export tutorial_cnn to ONNX: RuntimeError: no ONNX function for "
        "aten::frobnicate\n")
    assert _files(tmp_path) == {"repo"}


def test_a_failed_triton_repository_leaves_no_onnx_file_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(folder: Path, *args: object) -> Path:
        raise WriteError(f"cannot write {folder}: No space left on device")

    monkeypatch.setattr(export, "stage_repository", disk_full)
    assert cli([str(SHIPPED / "cifar10_tutorial_cnn.pt"), str(tmp_path / "out.onnx"),
                "--triton-repo", str(tmp_path / "repo")]) == 2
    assert capsys.readouterr().err.endswith("repo/cifar10_tutorial_cnn: No space left on device\n")
    assert _files(tmp_path) == set()


def test_a_name_triton_cannot_use_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli([str(SHIPPED / "cifar10_tutorial_cnn.pt"), "out.onnx", "--name", "../up"])
    assert exit_.value.code == 2
    assert "'../up' cannot name a Triton model" in capsys.readouterr().err


@pytest.mark.slow
def test_the_module_exits_non_zero_with_one_line_for_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "training.export", str(tmp_path / "notes.pt"),
         str(tmp_path / "out.onnx")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: cannot load checkpoint ")
    assert result.stderr.count("\n") == 1
    assert _files(tmp_path) == {"notes.pt"}


def test_without_the_export_extra_the_module_names_the_pip_command() -> None:
    code = ("import runpy, sys; sys.modules['onnxscript'] = None; "
            "sys.argv = ['training.export', '--help']; "
            "runpy.run_module('training.export', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "export needs onnx, onnxruntime and onnxscript: pip install '.[export]'\n")
