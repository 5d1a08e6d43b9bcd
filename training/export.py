"""Export a checkpoint as an ONNX model that answers as the service does.

    python -m training.export models/cifar10_whitened_vgg.pt whitened_vgg.onnx --triton-repo triton/

The graph takes `pixels`, UINT8 [N, 3, S, S]: RGB before normalisation, what the service's /v2
`pixels` input takes. It gives `probabilities`, FP32 [N, C]: softmax(logits / T), what /predict
and /v2 give; and `logits`, FP32 [N, C]: the network's output averaged over the checkpoint's
test-time augmentation views, *before* the temperature (so probabilities = softmax(logits / T),
with T in the metadata). Normalisation (meta.mean, meta.std), the TTA views
(models.inference.tta_logits) and the temperature are inside the graph; BatchNorm is folded as
the service folds it. N is dynamic. Every export is run once in onnxruntime against PyTorch.
Every architecture exports; vgg16's file is 537 MB (30 s and 3.4 GB of memory on a 2-core VM).

metadata_props, all strings: `classes`, `mean`, `std` (JSON lists), `input_size`,
`temperature` (JSON numbers), `tta`, `arch`, `checkpoint` (the file's name),
`checkpoint_sha256`, and `logits` (what that output is, in words).

`--triton-repo DIR` also writes DIR/<name>/ for Triton's onnxruntime backend
(training/triton_repo.py); a tritonclient call that works there and on the service's /v2 is in
docs/open-inference-protocol.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

# The export extra, which the serving image leaves out: one line instead of a traceback.
if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime", "onnxscript")):
    sys.exit("export needs onnx, onnxruntime and onnxscript: pip install '.[export]'")

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from models.checkpoint import CheckpointError, CheckpointMeta, LoadedModel, load_checkpoint
from models.inference import check_tta, tta_logits
from models.preprocess import normalize
from training.staging import WriteError, check_writable, commit, discard, stage_file
from training.triton_repo import LABELS, Tensor, check_name, config_pbtxt, stage_repository

# Opset 18: the dynamo exporter's own default in torch 2.14, run by onnxruntime 1.14 and later
# (Triton's onnxruntime backend since 23.x). Exact GELU is Erf arithmetic in it.
OPSET = 18
# The names the service's /v2 uses for the same tensors (app/http/v2/model.py).
PIXELS, PROBABILITIES, LOGITS = "pixels", "probabilities", "logits"
# |Δprobability| allowed between onnxruntime and PyTorch on the export's own check; fp32 exports
# of the shipped models differ by about 1e-7.
TOLERANCE = 1e-4
LOGITS_MEANING = ("the network's logits averaged over the test-time augmentation views, before "
                  "the temperature: probabilities = softmax(logits / temperature)")


class ExportError(Exception):
    """The model could not be exported or written; the message says which and why."""


class ServingGraph(nn.Module):
    """uint8 pixels → (probabilities, logits): the steps app's Predictor.predict runs."""

    def __init__(self, model: nn.Module, meta: CheckpointMeta) -> None:
        super().__init__()
        self.model = model
        self.mean, self.std = list(meta.mean), list(meta.std)
        self.tta = check_tta(meta.tta)
        self.temperature = float(meta.temperature)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = tta_logits(self.model, normalize(pixels, self.mean, self.std), self.tta)
        return torch.softmax(logits / self.temperature, dim=1), logits


def metadata(loaded: LoadedModel) -> dict[str, str]:
    meta = loaded.meta
    return {
        "classes": json.dumps(meta.classes), "input_size": str(meta.input_size),
        "mean": json.dumps(meta.mean), "std": json.dumps(meta.std),
        "temperature": json.dumps(meta.temperature), "tta": meta.tta, "arch": meta.arch,
        "checkpoint": Path(loaded.path).name, "checkpoint_sha256": loaded.sha256,
        "logits": LOGITS_MEANING,
    }


def _pixels(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def export_model(loaded: LoadedModel) -> tuple[onnx.ModelProto, ServingGraph]:
    """The checked ONNX model with its metadata, and the PyTorch module it was traced from."""
    meta = loaded.meta
    graph = ServingGraph(loaded.model, meta).eval()
    try:
        # The torch.export-based (dynamo) exporter: torch 2.14's default; the TorchScript one also
        # exports these models but warns it is deprecated and emits 2.4× the nodes for multicrop.
        program = torch.onnx.export(
            graph, (_pixels(2, meta.input_size, seed=0),), dynamo=True, opset_version=OPSET,
            input_names=[PIXELS], output_names=[PROBABILITIES, LOGITS],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False,
        )
        proto = program.model_proto
    except Exception as exc:
        raise ExportError(f"cannot export {meta.arch} to ONNX: {_first_line(exc)}") from None
    proto.producer_name = "cnn-serve"
    proto.doc_string = (f"{meta.arch} for {len(meta.classes)} classes: {PIXELS} uint8 "
                        f"[N, 3, {meta.input_size}, {meta.input_size}] RGB → {PROBABILITIES} "
                        f"= softmax({LOGITS} / temperature); {LOGITS}: {LOGITS_MEANING}")
    onnx.helper.set_model_props(proto, metadata(loaded))
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the ONNX model of {meta.arch} is invalid: {_first_line(exc)}") from None
    return proto, graph


def check_with_onnxruntime(model: bytes, graph: ServingGraph, size: int) -> float:
    """The largest |Δprobability| between onnxruntime and PyTorch on noise images in batches
    of 1 and 3 (the export traced a batch of 2, so this also proves N dynamic)."""
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 3):
        pixels = _pixels(n, size, seed=n)
        with torch.inference_mode():
            want = graph(pixels)[0].numpy()
        got = session.run([PROBABILITIES], {PIXELS: pixels.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    if not worst <= TOLERANCE:  # also NaN
        raise ExportError(f"onnxruntime's probabilities differ from PyTorch's by {worst:.2g} "
                          f"(allowed {TOLERANCE:g}); not writing the export")
    return worst


def triton_config(name: str, meta: CheckpointMeta, max_batch_size: int,
                  max_queue_delay_us: int) -> str:
    size, c = meta.input_size, len(meta.classes)
    return config_pbtxt(
        name,
        [Tensor(PIXELS, "TYPE_UINT8", (3, size, size))],
        [Tensor(PROBABILITIES, "TYPE_FP32", (c,), label_filename=LABELS),
         Tensor(LOGITS, "TYPE_FP32", (c,))],
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
    )


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a checkpoint as ONNX (uint8 pixels in; probabilities and logits "
                    "out; normalisation, TTA and temperature inside), optionally as a Triton "
                    "model repository too.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint to export (.pt)")
    p.add_argument("output", type=Path, help="the ONNX file to write")
    p.add_argument("--triton-repo", type=Path, default=None, metavar="DIR",
                   help="also write a Triton model repository here: DIR/NAME/config.pbtxt, "
                        "DIR/NAME/labels.txt, DIR/NAME/1/model.onnx")
    p.add_argument("--name", type=_name, default=None,
                   help="the model's name in the Triton repository; None: the checkpoint's file "
                        "name without .pt, the name the service's /v2 uses")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="Triton's max_batch_size (the service's CNN_SERVE_MAX_BATCH_SIZE default)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="Triton's dynamic batching delay in µs (the service waits 2 ms)")
    return p


def main(args: argparse.Namespace) -> list[str]:
    """Export and write; returns what was written, one line each."""
    if args.max_batch_size < 1 or args.max_queue_delay_us < 0:
        raise ExportError("--max-batch-size must be at least 1 and --max-queue-delay-us at "
                          "least 0")
    name = args.name or args.checkpoint.stem
    if args.triton_repo is not None:
        try:
            check_name(name)
        except ValueError as exc:
            raise ExportError(f"{exc}; pass --name") from None
    if args.output.resolve() == args.checkpoint.resolve():
        raise ExportError(f"the output {args.output} is the checkpoint itself; name another file")
    check_writable(args.output, "the ONNX file")
    if args.triton_repo is not None:
        check_writable(args.triton_repo, "the Triton repository", folder=True)
    loaded = load_checkpoint(args.checkpoint, fold_bn=True)  # folded, as the service runs it
    meta = loaded.meta
    proto, graph = export_model(loaded)
    model = proto.SerializeToString()
    worst = check_with_onnxruntime(model, graph, meta.input_size)

    # Both outputs are staged before either is put in place: a failure leaves neither.
    staged_file, staged_repo = stage_file(args.output, model), None
    try:
        if args.triton_repo is not None:
            config = triton_config(name, meta, args.max_batch_size, args.max_queue_delay_us)
            staged_repo = stage_repository(args.triton_repo / name, config, model, meta.classes)
        commit(staged_file, args.output)
        if staged_repo is not None:
            commit(staged_repo, args.triton_repo / name)
    finally:
        discard(staged_file, staged_repo)
    size = meta.input_size
    lines = [f"wrote {args.output}: {meta.arch}, {len(meta.classes)} classes, {PIXELS} uint8 "
             f"[N, 3, {size}, {size}], tta {meta.tta}, temperature {meta.temperature:g}, opset "
             f"{OPSET}; onnxruntime matches PyTorch within {worst:.1g}"]
    if args.triton_repo is not None:
        lines.append(f"wrote {args.triton_repo / name}/: config.pbtxt, labels.txt, 1/model.onnx")
    return lines


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        lines = main(args)
    except (CheckpointError, ExportError, WriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
