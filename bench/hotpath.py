"""CPU per request of the serving code itself: each app driven in-process, no network, no wrk.

bench/serve.py measures what a client sees, through loopback TCP with wrk on the same two
cores, and on a small shared VM its figures drift by a third from one run to the next. This
drives one app at a time, each in a fresh process, with sequential POST /predict requests
handed to the ASGI app the way uvicorn hands them over, with the real lifespan (checkpoint
loaded and warmed up, micro-batcher and inference thread running), and reports per request:
wall time, CPU time of the event-loop thread, and CPU time of the whole process (every thread:
inference, decoding, torch's own). The tutorial-grade baseline (bench/baseline_app.py) is
driven the same way. Targets alternate, and every figure is the median over the rounds.

    python -m bench.hotpath                                  # 32×32 PNG, 2,000 requests × 3
    python -m bench.hotpath --image examples/cat.png --requests 300
    python -m bench.hotpath --pause-ms 5                     # idle 5 ms between requests
    python -m bench.hotpath --targets ours --ours-env CNN_SERVE_TORCH_THREADS=2

Our service runs with its default settings, access log included (captured, not shown); the
baseline's uvicorn access log is not part of its app, so it is not counted.

With `--gate PREFIX` a child waits, after warm-up, until PREFIX.go exists and creates
PREFIX.done when the measured requests are over: bench/callgrind.sh uses that to count the
instructions of the measured requests alone, per thread, which do not drift with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/hotpath.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.serve import make_checkpoint, make_images, multipart, parse_env  # noqa: E402

TARGETS = ("ours", "baseline")
RESULT_PREFIX = "HOTPATH "
FIELDS = (("wall_ms", "wall"), ("loop_cpu_ms", "loop-thread CPU"),
          ("process_cpu_ms", "process CPU"))


# --- child: one app, in this process ------------------------------------------------------------
def load_app(target: str, checkpoint: Path) -> Any:
    """The ASGI app of `target`, configured from the environment as its server would be."""
    if target == "ours":
        os.environ["MODEL_PATH"] = str(checkpoint)
        from app.main import create_app

        return create_app()
    os.environ["BASELINE_MODEL_PATH"] = str(checkpoint)
    from bench.baseline_app import app  # loads the model at import, as tutorials do

    return app


def request_driver(app: Any, body: bytes, content_type: str) -> Callable[[], Any]:
    """A coroutine function that sends one POST /predict through the app and checks the 200."""
    headers = [(b"host", b"bench"), (b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode())]

    async def one() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        done = asyncio.Event()
        status: list[int] = []

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await done.wait()  # after the response, as a server does: the client is gone
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif not message.get("more_body", False):
                done.set()

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict",
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
        }
        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"POST /predict answered {status}")

    return one


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)


async def measure(app: Any, one: Callable[[], Any], warmup: int, requests: int,
                  pause_s: float, gate: str | None) -> dict[str, float]:
    """Per request: wall time (pauses not counted), event-loop-thread CPU, process CPU."""
    async with app.router.lifespan_context(app):
        for _ in range(warmup):
            await one()
        if gate:
            Path(gate + ".ready").touch()
            wait_for(Path(gate + ".go"))
        wall, loop_cpu, cpu = 0.0, time.thread_time(), time.process_time()
        for _ in range(requests):
            if pause_s:
                await asyncio.sleep(pause_s)  # every thread idle, as between two clients
            started = time.perf_counter()
            await one()
            wall += time.perf_counter() - started
        loop_cpu = time.thread_time() - loop_cpu
        cpu = time.process_time() - cpu
        if gate:
            Path(gate + ".done").touch()
            wait_for(Path(gate + ".exit"))
    per = 1000 / requests
    return {"wall_ms": wall * per, "loop_cpu_ms": loop_cpu * per, "process_cpu_ms": cpu * per}


def child(args: argparse.Namespace) -> int:
    import uvloop  # what uvicorn runs the service on

    app = load_app(args.child, args.checkpoint)
    body, content_type = multipart(args.image)
    result = uvloop.run(measure(app, request_driver(app, body, content_type), args.warmup,
                                args.requests, args.pause_ms / 1000, args.gate))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# --- parent: rounds, alternating targets ---------------------------------------------------------
def run_child(args: argparse.Namespace, target: str, checkpoint: Path, image: Path) -> dict:
    argv = [sys.executable, "-m", "bench.hotpath", "--child", target, "--checkpoint",
            str(checkpoint), "--image", str(image), "--requests", str(args.requests),
            "--warmup", str(args.warmup), "--pause-ms", str(args.pause_ms)]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CNN_SERVE_") and k != "MODEL_PATH"}
    if target == "ours":
        env.update(parse_env(args.ours_env))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{target} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix(RESULT_PREFIX))


def medians(results: list[dict]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key, _ in FIELDS}


def print_table(summary: dict[str, dict[str, float]]) -> None:
    print(f"\n{'per request, median':22}" + "".join(f"{label:>18}" for _, label in FIELDS))
    for target, row in summary.items():
        print(f"{target:22}" + "".join(f"{row[key]:15.3f} ms" for key, _ in FIELDS))
    if set(summary) == set(TARGETS):
        ours, base = summary["ours"], summary["baseline"]
        print(f"{'baseline / ours':22}" + "".join(
            f"{base[key] / ours[key]:17.2f}×" for key, _ in FIELDS))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="CPU per /predict request of our app and of the baseline, in-process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image", type=Path, default=None,
                        help="image to upload; None: the 32×32 PNG bench/serve.py uses")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests first")
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; medians shown")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle time before each measured request (not counted)")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for our app, e.g. CNN_SERVE_TORCH_THREADS=2; "
                             "repeat for several")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS),
                        help="apps to measure")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint both apps load; None: random weights (speed does "
                             "not depend on them)")
    parser.add_argument("--child", choices=TARGETS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gate", default=None,
                        help="with --child: file prefix to wait on (see bench/callgrind.sh)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.warmup < 0 or args.rounds < 1 or args.pause_ms < 0:
        print("error: --requests must be >= 1, --warmup >= 0, --rounds >= 1, --pause-ms >= 0",
              file=sys.stderr)
        return 2
    parse_env(args.ours_env)  # a malformed pair stops here, not in every child
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hotpath-")))
        if args.checkpoint is None:
            args.checkpoint = make_checkpoint(tmp / "random_tutorial_cnn.pt")
        if args.image is None:
            args.image = make_images(tmp, jpeg_size=(64, 48))["png32"]
        if args.child:
            return child(args)
        print(f"image {args.image.name} ({args.image.stat().st_size:,} bytes); "
              f"{args.requests} requests after {args.warmup} warm-up, {args.rounds} round(s)"
              + (f", {args.pause_ms:g} ms idle before each" if args.pause_ms else "")
              + (f"; ours with {' '.join(args.ours_env)}" if args.ours_env else ""))
        results: dict[str, list[dict]] = {t: [] for t in args.targets}
        for rnd in range(args.rounds):
            order = list(args.targets) if rnd % 2 == 0 else list(reversed(args.targets))
            for target in order:
                r = run_child(args, target, args.checkpoint, args.image)
                results[target].append(r)
                print(f"  round {rnd + 1} {target:8}" + "".join(
                    f"  {label} {r[key]:.3f} ms" for key, label in FIELDS), flush=True)
        print_table({t: medians(rs) for t, rs in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
