#!/usr/bin/env bash
# Instructions per /predict request, per thread, of our app or the baseline, counted by
# valgrind's callgrind over the measured requests of bench/hotpath.py only. Instruction counts
# do not drift with what else the machine runs, so two commits can be compared on a noisy VM.
#
#   bench/callgrind.sh ours [REQUESTS] [IMAGE]        # default 200 requests, the 32×32 PNG
#   bench/callgrind.sh baseline
#   KEEP=/tmp/cg bench/callgrind.sh ours               # keep the profiles, one file per thread,
#   callgrind_annotate /tmp/cg/cg.*-05 | head -40       # to see where a thread's instructions go
#
# Needs valgrind (Debian: apt-get install valgrind). Slow: importing torch under valgrind takes
# a few minutes, and each measured request ~50× its normal time.
set -euo pipefail

target=${1:?usage: bench/callgrind.sh ours|baseline [REQUESTS] [IMAGE]}
requests=${2:-200}
image=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d /tmp/bench-callgrind-XXXXXX)
trap 'rm -rf "$work"' EXIT
gate=$work/gate

"$python" -c "
import sys; sys.path.insert(0, '$repo')
from pathlib import Path
from bench.serve import make_checkpoint, make_images
make_checkpoint(Path('$work/ckpt.pt')); make_images(Path('$work'), jpeg_size=(64, 48))"
image=${image:-$work/cat32.png}

cd "$repo"
valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \
  --callgrind-out-file="$work/cg.%p" --log-file="$work/valgrind.log" \
  "$python" -m bench.hotpath --child "$target" --checkpoint "$work/ckpt.pt" \
  --image "$image" --requests "$requests" --warmup 30 --gate "$gate" >"$work/out.txt" 2>&1 &
pid=$!
until [ -e "$gate.ready" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/out.txt" "$work/valgrind.log" >&2; exit 1; }
  sleep 0.5
done
callgrind_control --instr=on "$pid" >/dev/null 2>&1
touch "$gate.go"
until [ -e "$gate.done" ]; do sleep 0.2; done
callgrind_control --instr=off "$pid" >/dev/null 2>&1
touch "$gate.exit"
wait "$pid"

total=0
for f in "$work"/cg.*-*; do
  n=$(awk '/^totals:/ {print $2; exit}' "$f")
  [ "${n:-0}" -gt 0 ] || continue
  total=$((total + n))
  which="thread ${f##*-}"; [ "${f##*-}" = 01 ] && which="thread 01 (main: the event loop)"
  echo "$target $which: $((n / requests)) instructions per request"
done
echo "$target all threads: $((total / requests)) instructions per request ($requests requests)"
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP" && cp "$work"/cg.* "$KEEP"/ && echo "profiles kept in $KEEP"
fi
