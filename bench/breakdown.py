"""Where a request's CPU goes in the running service, under load: a sampled profile by category.

Starts our service (`python -m app`, its default workers), loads it with wrk for a warm-up, then
samples every worker process with py-spy while wrk runs, and splits the server's CPU time per
request (read from /proc, all its processes) by what the sampled stacks were doing: decode,
model, multipart, route, middleware, batching and thread hand-offs, the event loop's own C code
(uvloop: sockets, httptools, callbacks), the rest of the HTTP server, logging, other. A stack
counts for the innermost frame that a category claims.

    python -m bench.breakdown                              # the 456×336 photo PNG, 10 s
    python -m bench.breakdown --image png32 --connections 32
    python -m bench.breakdown --image jpeg2mp --ours-env CNN_SERVE_PRECISION=bf16

Needs `wrk` and `py-spy` (`pip install py-spy`). Sampling itself takes some CPU, on these two
cores too, so the req/s printed here is lower than bench/serve.py's: read the shares.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/breakdown.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.serve import make_checkpoint, make_images, run_wrk, servers  # noqa: E402

# (category, path fragment, function names or None for any); the first rule that claims a
# frame wins, frames are read from the innermost out.
RULES: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("model", "/models/preprocess.py", frozenset({"normalize"})),
    ("decode", "/models/", None),
    ("decode", "/PIL/", None),
    ("model", "/torch/", None),
    ("model", "/app/inference/predictor.py", frozenset({"predict"})),
    ("multipart", "/app/http/multipart.py", None),
    ("route", "/app/http/routes/", None),
    ("middleware", "/app/http/middleware.py", None),
    ("middleware", "/app/observability.py", None),
    ("logging", "/logging/", None),
    ("batching + threads", "/app/inference/", None),
    ("batching + threads", "/concurrent/futures/", None),
    ("batching + threads", "/threading.py", None),
    ("event loop", "/asyncio/runners.py", None),  # innermost: uvloop's own C (sockets, calls)
    ("batching + threads", "/asyncio/", None),
    ("HTTP server", "/uvicorn/", None),
    ("HTTP server", "/starlette/", None),
    ("HTTP server", "/fastapi/", None),
    ("HTTP server", "/app/server/", None),
    ("HTTP server", "/app/http/", None),
)
CATEGORIES = tuple(dict.fromkeys(rule[0] for rule in RULES)) + ("other",)


def frame_parts(frame: str) -> tuple[str, str]:
    """'func (path:line)' → (func, path)."""
    name, _, where = frame.partition(" (")
    return name.rsplit(".", 1)[-1], where.rsplit(":", 1)[0]


def category(stack: list[str]) -> str:
    for frame in reversed(stack):
        func, path = frame_parts(frame)
        for name, fragment, funcs in RULES:
            if fragment in path and (funcs is None or func in funcs):
                return name
    return "other"


def split_samples(lines: list[str]) -> tuple[collections.Counter, collections.Counter]:
    """py-spy's raw lines ('frame;frame;… count') → samples per category and per innermost
    frame."""
    by_category: collections.Counter = collections.Counter()
    by_leaf: collections.Counter = collections.Counter()
    for line in lines:
        stack_text, _, count = line.rstrip().rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = [f for f in stack_text.split(";") if not f.startswith(("process ", "thread "))]
        by_category[category(stack)] += int(count)
        if stack:
            by_leaf[stack[-1]] += int(count)
    return by_category, by_leaf


def table(by_category: collections.Counter, cpu_ms: float) -> list[str]:
    """Per category: ms of server CPU per request and its share."""
    total = sum(by_category.values()) or 1
    rows = [f"{'category':20} {'ms/request':>10} {'share':>6}"]
    for name in CATEGORIES:
        share = by_category.get(name, 0) / total
        rows.append(f"{name:20} {share * cpu_ms:10.3f} {share:6.1%}")
    rows.append(f"{'total (from /proc)':20} {cpu_ms:10.3f}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.breakdown", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="photo", choices=("png32", "photo", "jpeg2mp", "jpeg"),
                        help="which of bench/serve.py's images to send (default: photo)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--seconds", type=int, default=10, help="sampled seconds")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to serve (default: random tutorial_cnn weights)")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for our service; repeat for several")
    parser.add_argument("--top", type=int, default=15, help="innermost frames to list")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    return parser


def main(args: argparse.Namespace) -> int:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    for tool in (args.wrk, spy):
        if shutil.which(tool) is None:
            print(f"error: {tool!r} not found (wrk: apt-get install wrk; py-spy: pip install "
                  "py-spy)", file=sys.stderr)
            return 2
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-breakdown-")))
        images = make_images(tmp)
        checkpoint = args.checkpoint or make_checkpoint(tmp / "random_tutorial_cnn.pt")
        wrk_args = argparse.Namespace(wrk=args.wrk, wrk_threads=1, timeout=10.0)
        ours = stack.enter_context(servers(
            argparse.Namespace(targets=["ours"], ours_env=args.ours_env), checkpoint, tmp,
            images["png32"]))["ours"]
        run_wrk(wrk_args, ours, images[args.image], args.connections, 2)
        raw = tmp / "profile.txt"
        profiler = subprocess.Popen(
            [spy, "record", "--pid", str(ours.proc.pid), "--subprocesses", "--nonblocking",
             "--rate", str(args.rate), "--duration", str(args.seconds + 1), "--format", "raw",
             "--full-filenames", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu_before = ours.cpu_seconds()
        result = run_wrk(wrk_args, ours, images[args.image], args.connections, args.seconds)
        cpu = ours.cpu_seconds() - cpu_before
        _, err = profiler.communicate(timeout=60)
        if not raw.exists():
            print(f"error: py-spy wrote no profile:\n{err.decode(errors='replace')[-2000:]}",
                  file=sys.stderr)
            return 1
        by_category, by_leaf = split_samples(raw.read_text().splitlines())
    cpu_ms = cpu * 1000 / max(result.requests, 1)
    print(f"{args.image}, {args.connections} connections: {result.rps:,.1f} req/s while "
          f"sampled, server CPU {cpu_ms:.3f} ms per request")
    print("\n".join(table(by_category, cpu_ms)))
    total = sum(by_leaf.values()) or 1
    print(f"\ninnermost frames, top {args.top}:")
    for frame, n in by_leaf.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
