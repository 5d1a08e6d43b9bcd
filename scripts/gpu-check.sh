#!/usr/bin/env bash
# The GPU checks, in one go on a machine with an NVIDIA GPU:
#   1. the shipped recipe (30 epochs) trained on CUDA with autocast,
#   2. one epoch of the same on that machine's CPU cores, for the GPU-vs-CPU images/s,
#   3. the GPU checkpoint loaded back on CPU: same predictions as on the GPU,
#   4. torchrun (NCCL), vgg16 and batch 1024 for a short run each,
#   5. the service on CUDA: /healthz and a real /predict,
#   6. the strong model: resnet9 with its recipe (saved in float16, ready to ship), then the
#      tutorial CNN distilled from it over 60 epochs (`ONLY="resnet9 distill"` runs just these),
#   7. the whitened VGG's recipe on CUDA (bf16, torch.compile), and its airbench96-class
#      residual variant, each with its time and accuracy (`ONLY="whitened whitened-resvgg"`:
#      the first thing to run when a GPU is lent).
#
#   scripts/gpu-check.sh DATA_TAR_OR_DIR OUTDIR
#
# DATA is ../shared/data/cifar10-train-jpg.tar.gz (or a folder holding train/<class>/*).
# Every step runs under its own time limit and the script goes on after a failure, so one
# run reports everything it can; the summary at the end lists each step's exit status.
set -u
data=${1:?usage: scripts/gpu-check.sh DATA_TAR_OR_DIR OUTDIR}
out=${2:?usage: scripts/gpu-check.sh DATA_TAR_OR_DIR OUTDIR}
py=${PYTHON:-python3}
gpu=${GPU_DEVICE:-cuda}  # GPU_DEVICE=cpu tries the script's flow on a machine without one
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
declare -A status

only=${ONLY:-}  # ONLY="serve-cuda ..." runs just those steps

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  [[ -z $only || " $only " == *" $name "* ]] || return 0
  echo
  echo "=== $name ($(date +%T), limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  status[$name]="exit $? after $((SECONDS - t0)) s"
  echo "=== $name: ${status[$name]}"
}

nvidia-smi -L
"$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
  "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")'
echo "CPU cores: $(nproc)"

if [[ -d $data ]]; then
  dir=$data
else
  dir=$work/cifar10
  mkdir -p "$dir" && tar xzf "$data" -C "$dir"
fi
common=(--dataset folder --data-dir "$dir" --cache-dir "$work/cache" --no-progress)

step gpu-train 240 "$py" -m training.run "${common[@]}" --device "$gpu" \
  --output "$out/gpu/cifar10_tutorial_cnn.pt" --logdir "$out/gpu/runs"
step cpu-train 120 "$py" -m training.run "${common[@]}" --device cpu --epochs 1 \
  --output "$out/cpu/cifar10_tutorial_cnn.pt" --logdir "$out/cpu/runs"
step gpu-one-epoch 60 "$py" -m training.run "${common[@]}" --device "$gpu" --epochs 1 \
  --output "$out/gpu1/cifar10_tutorial_cnn.pt" --logdir "$out/gpu1/runs"

step gpu-batch-1024 60 "$py" -m training.run "${common[@]}" --device "$gpu" --epochs 3 \
  --batch-size 1024 --lr 0.04 --output "$out/gpu1024/cifar10_tutorial_cnn.pt" --logdir "$out/gpu1024/runs"

step load-on-cpu 60 "$py" - "$out/gpu/cifar10_tutorial_cnn.pt" "$gpu" <<'PY'
import sys
import torch
from models.checkpoint import load_checkpoint

path = sys.argv[1]
on_cpu, on_gpu = load_checkpoint(path, "cpu"), load_checkpoint(path, sys.argv[2])
print("meta:", {k: on_cpu.meta.to_dict()[k] for k in ("arch", "temperature", "metrics")})
x = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    a = on_cpu.model(x)
    b = on_gpu.model(x.to(on_gpu.device)).float().cpu()
same = (a.argmax(1) == b.argmax(1)).float().mean().item()
print(f"CPU vs GPU logits on 512 inputs: max |diff| {(a - b).abs().max().item():.2e}, "
      f"same top class {same:.1%}")
PY
step predict-on-cpu 60 "$py" -m training.predict --checkpoint "$out/gpu/cifar10_tutorial_cnn.pt" \
  --device cpu examples/cat.png

step torchrun-nccl 90 "$py" -m torch.distributed.run --standalone --nproc_per_node 1 \
  -m training.run "${common[@]}" --device "$gpu" --epochs 2 \
  --output "$out/ddp/cifar10_tutorial_cnn.pt" --logdir "$out/ddp/runs"
step vgg16 90 "$py" -m training.run "${common[@]}" --device "$gpu" --arch vgg16 --input-size 32 \
  --epochs 1 --lr 0.005 --output "$out/vgg/cifar10_vgg16.pt" --logdir "$out/vgg/runs"

step resnet9 300 "$py" -m training.run "${common[@]}" --device "$gpu" --arch resnet9 \
  --save-dtype float16 --output "$out/resnet9/cifar10_resnet9.pt" --logdir "$out/resnet9/runs"
step distill 300 "$py" -m training.run "${common[@]}" --device "$gpu" --epochs 60 --patience 0 \
  --teacher "$out/resnet9/cifar10_resnet9.pt" --output "$out/distill/cifar10_tutorial_cnn.pt" \
  --logdir "$out/distill/runs"

step whitened 300 "$py" -m training.run "${common[@]}" --device "$gpu" --arch whitened_vgg \
  --save-dtype float16 --output "$out/whitened/cifar10_whitened_vgg.pt" --logdir "$out/whitened/runs"
step whitened-resvgg 600 "$py" -m training.run "${common[@]}" --device "$gpu" \
  --arch whitened_resvgg --save-dtype float16 --output "$out/resvgg/cifar10_whitened_resvgg.pt" \
  --logdir "$out/resvgg/runs"

serve_check() {
  CNN_SERVE_DEVICE=$gpu CNN_SERVE_WORKERS=1 CNN_SERVE_LOG_LEVEL=warning CNN_SERVE_PORT=8000 \
    CNN_SERVE_MODEL_PATH="$model" "$py" -m app &
  local pid=$!
  "$py" - <<'PY'
import asyncio, json, time
import httpx

base = "http://127.0.0.1:8000"
for _ in range(120):
    try:
        if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
print("healthz:", httpx.get(f"{base}/healthz").text)
cat = open("examples/cat.png", "rb").read()
r = httpx.post(f"{base}/predict", files={"file": ("cat.png", cat)})
print("predict:", r.status_code, json.dumps({k: r.json()[k] for k in ("class", "confidence")}))

async def load(n=2000, conns=32):
    statuses = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def one():
            while len(statuses) < n:
                statuses.append((await client.post("/predict", files={"file": ("c.png", cat)})).status_code)
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(conns)))
        return n / (time.perf_counter() - t0), statuses

rate, statuses = asyncio.run(load())
print(f"/predict, 32 connections from one httpx client (client-bound): {rate:.0f} req/s, "
      f"non-200: {sum(s != 200 for s in statuses)}")
PY
  local rc=$?
  kill -TERM "$pid"
  wait "$pid"
  echo "server exit status after SIGTERM: $?"
  return $rc
}
model=$out/gpu/cifar10_tutorial_cnn.pt
[[ -f $model ]] || model=models/cifar10_tutorial_cnn.pt
step serve-cuda 120 bash -c "$(declare -f serve_check); gpu=$gpu py=$py model=$model serve_check"

echo
echo "=== images/s per epoch (from each run's report)"
"$py" - "$out" <<'PY'
import json, pathlib, sys

for report in sorted(pathlib.Path(sys.argv[1]).glob("*/*.report.json")):
    r = json.loads(report.read_text())
    rates = [h["images_per_s"] for h in r["history"]]
    steady = rates[1:] or rates
    meta = r["meta"]
    print(f"{report.parent.name:7} {meta['arch']:13} epochs {len(rates):2}  "
          f"img/s first {rates[0]:>9,.0f}  later mean {sum(steady) / len(steady):>9,.0f}  "
          f"val acc {r['validation']['val_accuracy']:.4f}  "
          f"{meta['training']['device']} {meta['training']['precision']}  "
          f"train {meta['training']['train_seconds']:.0f} s")
PY
echo
echo "=== summary"
for name in "${!status[@]}"; do echo "$name: ${status[$name]}"; done | sort
rm -rf "$work"
