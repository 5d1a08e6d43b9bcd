"""Serving benchmark: our service against a tutorial-grade FastAPI baseline, side by side.

Starts both servers on free local ports (ours with `python -m app`, the baseline in
`bench/baseline_app.py` with one uvicorn worker), both serving the same checkpoint, then drives
each with `wrk` (a separate process, with `bench/wrk_multipart.lua` posting one image as
multipart) and prints requests/s, p50 and p99 latency, transport errors, non-2xx answers and the
ratio ours / baseline for every scenario. Ours and the baseline alternate scenario by scenario
(and swap order every round), so a noisy machine hits both alike.

    python bench/serve.py                      # all scenarios, 10 s each
    python bench/serve.py --duration 20 --rounds 2
    python bench/serve.py --scenarios png32-c32 photo-c32 --ours-env CNN_SERVE_WORKERS=1

Against the limit: a third server, `bench/noop_app.py` (HTTP alone, no decode, no model), runs
each scenario too, and before any server starts the fastest one-thread decode + resize of each
image and the model's share of a batch of 32 are timed (bench/limits.py). The second table gives
each scenario's limit, n ÷ (decode + model + n ÷ no-op req/s) with n the cores (or the
connections, if fewer), and our share of it.

Needs `wrk` (Debian: `apt-get install wrk`). Images are made at run time in a temporary folder,
all from examples/cat.png: a 32×32 PNG, a 456×336 photo PNG carrying iCCP, eXIf and pHYs chunks
as phones and editors write them, a 1600×1200 JPEG (a phone or web upload) and a 4000×3000 one
(quality 90). Without --checkpoint a random-weights tutorial_cnn checkpoint is written there
too: speed does not depend on the weights. Run it on an otherwise idle machine; the load average
is printed before and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/serve.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))
LUA = REPO / "bench" / "wrk_multipart.lua"
PHOTO = REPO / "examples" / "cat.png"


@dataclass(frozen=True)
class Scenario:
    name: str
    image: str  # key into the images made by make_images()
    connections: int
    description: str
    min_ratio: float | None = None  # goal: ours / baseline requests/s
    max_p99_ms: float | None = None  # goal: our p99
    p50_no_worse: bool = False  # goal: our p50 <= the baseline's
    min_limit_share: float | None = None  # goal: ours / the limit (bench/limits.py)
    min_noop_share: float | None = None  # goal: ours / the HTTP no-op server's req/s


SCENARIOS = (
    Scenario("png32-c1", "png32", 1, "32×32 PNG, 1 connection", p50_no_worse=True),
    Scenario("png32-c32", "png32", 32, "32×32 PNG, 32 connections", 3.0, 40.0,
             min_noop_share=0.5),
    Scenario("photo-c32", "photo", 32, "456×336 PNG photo, 32 connections", 2.0,
             min_limit_share=0.85),
    Scenario("jpeg2mp-c32", "jpeg2mp", 32, "1600×1200 JPEG, 32 connections",
             min_limit_share=0.85),
    Scenario("jpeg12mp-c1", "jpeg", 1, "4000×3000 JPEG, 1 connection", 5.0,
             p50_no_worse=True),
    Scenario("jpeg12mp-c4", "jpeg", 4, "4000×3000 JPEG, 4 connections", 5.0,
             min_limit_share=0.9),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)
TARGETS = ("ours", "baseline", "noop")


@dataclass
class Result:
    requests: int
    seconds: float
    errors: int  # connect, read, write errors and timeouts
    non2xx: int
    p50_ms: float
    p99_ms: float
    server_cpu: float  # CPU seconds the server's processes used per wall second
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# --- inputs -------------------------------------------------------------------------------------
def make_images(folder: Path, jpeg_size: tuple[int, int] = (4000, 3000)) -> dict[str, Path]:
    """The example photo as a 32×32 PNG, a 456×336 photo PNG (iCCP, eXIf, pHYs), a 1600×1200
    JPEG and a `jpeg_size` JPEG."""
    from PIL import Image

    with Image.open(PHOTO) as original:
        icc = original.info.get("icc_profile")
        photo = original.convert("RGB")
    png32 = folder / "cat32.png"
    photo.resize((32, 32), Image.Resampling.BILINEAR).save(png32, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 1  # Orientation: upright, as most phones write it
    exif[0x010F], exif[0x0110] = "Example", "Phone 1"  # Make, Model
    photo_png = folder / "cat_456x336.png"
    photo.resize((456, 336), Image.Resampling.BICUBIC).save(
        photo_png, "PNG", icc_profile=icc, exif=exif, dpi=(72, 72))
    images = {"png32": png32, "photo": photo_png}
    for key, (w, h) in (("jpeg2mp", (1600, 1200)), ("jpeg", jpeg_size)):
        images[key] = folder / f"cat_{w}x{h}.jpg"
        photo.resize((w, h), Image.Resampling.BICUBIC).save(images[key], "JPEG", quality=90)
    return images


def make_checkpoint(path: Path, arch: str = "tutorial_cnn") -> Path:
    """Random weights of `arch`, with the test-time augmentation its recipe ships with."""
    import torch

    from models.architectures import build_model
    from models.checkpoint import save_checkpoint, tutorial_meta
    from training.run import RECIPES

    torch.manual_seed(0)
    meta = tutorial_meta()
    meta.arch, meta.tta = arch, RECIPES[arch].tta
    meta.data = {"dataset": "random weights for bench/serve.py"}
    save_checkpoint(path, build_model(meta.arch, len(meta.classes)), meta)
    return path


# --- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, content_type: str, timeout: float = 30) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int,
                 log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, probe: Path, timeout: float = 180) -> None:
        """Until a real prediction answers 200 (the model is loaded and warmed up)."""
        body, content_type = multipart(probe)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.tail())
            try:
                if post(self.port, body, content_type) == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{self.name} not ready after {timeout:g} s:\n" + self.tail())
        # With several worker processes the first answer proves only one is up: wait until
        # no more of them report startup, or wrk's connections would all go to the first.
        started, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 3 and time.monotonic() < deadline:
            now = self.log.read_text(errors="replace").count("Application startup complete")
            if now != started:
                started, stable_since = now, time.monotonic()
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and all its descendants (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total, todo = 0.0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--ours-env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def our_workers(args: argparse.Namespace) -> int:
    """How many processes our service runs with these arguments (the no-op runs as many)."""
    from app.settings import available_cpus

    return int(parse_env(args.ours_env).get("CNN_SERVE_WORKERS", available_cpus()))


@contextmanager
def servers(args: argparse.Namespace, checkpoint: Path, tmp: Path,
            probe: Path) -> Iterator[dict[str, Server]]:
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("CNN_SERVE_") and k != "MODEL_PATH"}
    python = sys.executable
    started: dict[str, Server] = {}
    try:
        if "ours" in args.targets:
            port = free_port()
            env = {**base_env, "MODEL_PATH": str(checkpoint), "CNN_SERVE_HOST": "127.0.0.1",
                   "CNN_SERVE_PORT": str(port), **parse_env(args.ours_env)}
            started["ours"] = Server("ours", [python, "-m", "app"], env, port,
                                     tmp / "ours.log")
        if "baseline" in args.targets:
            port = free_port()
            env = {**base_env, "BASELINE_MODEL_PATH": str(checkpoint)}
            started["baseline"] = Server(
                "baseline",
                [python, "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "1"],
                env, port, tmp / "baseline.log",
            )
        if "noop" in args.targets:
            port = free_port()
            started["noop"] = Server(
                "noop",
                [python, "-m", "bench.noop_app", "--port", str(port),
                 "--workers", str(our_workers(args))],
                base_env, port, tmp / "noop.log",
            )
        for server in started.values():
            server.wait_ready(probe)
        yield started
    finally:
        for server in started.values():
            server.stop()


# --- load ---------------------------------------------------------------------------------------
def wrk_result(argv: list[str]) -> dict:
    """Run wrk with one of our Lua scripts; the JSON its done() prints on a WRK_RESULT line."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(line.removeprefix("WRK_RESULT "))


def run_wrk(args: argparse.Namespace, server: Server, image: Path, connections: int,
            seconds: float) -> Result:
    threads = max(1, min(args.wrk_threads, connections))
    argv = [args.wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", f"{args.timeout:g}s", "-s", str(LUA),
            f"http://127.0.0.1:{server.port}/predict", "--", str(image)]
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    raw = wrk_result(argv)
    cpu = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
    return Result(
        requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
        + raw["timeouts"],
        non2xx=raw["non2xx"], p50_ms=raw["p50_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        server_cpu=cpu, by_status=raw["non2xx_by_status"],
    )


def median_result(results: list[Result]) -> Result:
    """Across rounds: summed counts, median rate and latencies (rounds are equally long)."""
    if len(results) == 1:
        return results[0]
    rps = statistics.median(r.rps for r in results)
    by_status: dict[str, int] = {}
    for r in results:
        for code, n in r.by_status.items():
            by_status[code] = by_status.get(code, 0) + n
    return Result(
        requests=round(rps * 1000), seconds=1000.0,
        errors=sum(r.errors for r in results), non2xx=sum(r.non2xx for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        server_cpu=statistics.median(r.server_cpu for r in results), by_status=by_status,
    )


# --- report -------------------------------------------------------------------------------------
def goal_text(s: Scenario, ours: Result | None, base: Result | None) -> str:
    if ours is None or base is None:
        return ""
    checks = []
    if s.min_ratio is not None:
        ok = base.rps > 0 and ours.rps / base.rps >= s.min_ratio
        checks.append(f"≥{s.min_ratio:g}× {'ok' if ok else 'MISSED'}")
    if s.max_p99_ms is not None:
        ok = ours.p99_ms < s.max_p99_ms
        checks.append(f"p99<{s.max_p99_ms:g}ms {'ok' if ok else 'MISSED'}")
    if s.p50_no_worse:
        checks.append(f"p50≤base {'ok' if ours.p50_ms <= base.p50_ms else 'MISSED'}")
    clean = ours.errors == ours.non2xx == base.errors == base.non2xx == 0
    checks.append("no errors" if clean else "ERRORS")
    return ", ".join(checks)


def cells(r: Result | None) -> list[str]:
    if r is None:
        return ["-"] * 5
    return [f"{r.rps:,.1f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.errors}/{r.non2xx}",
            f"{r.server_cpu:.2f}"]


def print_table(rows: list[tuple[Scenario, Result | None, Result | None]]) -> None:
    header = ["scenario", "conns",
              "ours req/s", "p50 ms", "p99 ms", "err/non2xx", "cpu",
              "base req/s", "p50 ms", "p99 ms", "err/non2xx", "cpu",
              "ratio", "goal"]
    table = [header]
    for s, ours, base in rows:
        ratio = f"{ours.rps / base.rps:.2f}×" if ours and base and base.rps else "-"
        table.append([s.name, str(s.connections), *cells(ours), *cells(base), ratio,
                      goal_text(s, ours, base)])
    print_aligned(table)
    for s, ours, base in rows:
        for name, r in (("ours", ours), ("baseline", base)):
            if r is not None and r.by_status:
                print(f"  {s.name} {name}: non-2xx by status {r.by_status}")
    print("cpu = server CPU seconds per wall second (all its processes); "
          "err = connect/read/write errors and timeouts")


def print_aligned(table: list[list[str]]) -> None:
    """Columns padded to their widest cell; the first and last left-aligned, a rule under
    the header."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        print("  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_limits(chosen: list[Scenario], results: dict[tuple[str, str], list[Result]],
                 costs: dict[str, Any]) -> None:
    """Our req/s against each scenario's limit (bench/limits.py), where ours and the no-op
    both ran."""
    from bench.limits import limit_table

    rows = []
    for s in chosen:
        ours, noop = (results.get((s.name, t)) for t in ("ours", "noop"))
        if ours and noop:
            rows.append({"name": s.name, "connections": s.connections,
                         "ours": median_result(ours).rps,
                         "noop": median_result(noop).rps, "decode": costs["decode"][s.image],
                         "min_limit_share": s.min_limit_share,
                         "min_noop_share": s.min_noop_share})
    if not rows:
        return
    print(f"\nagainst the limit: n ÷ (fastest one-thread decode + resize + model share at "
          f"batch 32 ({costs['precision']}) + http), where http = n ÷ no-op req/s and n = the "
          f"cores ({costs['cores']}) or the connections if fewer")
    print_aligned(limit_table(rows, costs["cores"], costs["model_ms"]))


def measure_costs(args: argparse.Namespace, chosen: list[Scenario], images: dict[str, Path],
                  checkpoint: Path) -> dict[str, Any]:
    """One-thread decode ms of each scenario's image (every candidate) and the model's ms per
    image, timed before any server starts."""
    from app.settings import Settings, available_cpus
    from bench.limits import decode_ms, model_ms

    env = parse_env(args.ours_env)
    precision = env.get("CNN_SERVE_PRECISION", Settings.model_fields["precision"].default)
    costs: dict[str, Any] = {"cores": available_cpus(), "precision": precision, "decode": {},
                             "model_ms": model_ms(checkpoint, precision,
                                                  env.get("CNN_SERVE_TTA"))}
    for key in dict.fromkeys(s.image for s in chosen):
        costs["decode"][key] = decode_ms(images[key], 32)
        print(f"  one-thread decode + resize of {key}: " + ", ".join(
            f"{name} {ms:.3f} ms" for name, ms in costs["decode"][key].items()), flush=True)
    print(f"  model share at batch 32, one thread: {costs['model_ms']:.3f} ms/image",
          flush=True)
    return costs


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, how many there are, and the vector instructions PyTorch's own
    kernels use on it: this project's VM, "AMD EPYC" every time, has run on AVX2-only hosts
    and on AVX-512 ones, where the forward pass takes 1.7× less CPU, so a figure is only
    comparable with its machine beside it."""
    import torch  # here, not at import: `--help` stays fast

    from models.devices import cpu_model

    model = cpu_model(cpuinfo)

    return (f"{model}, {os.cpu_count()} cpus, "
            f"torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}")


# --- CLI ----------------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark our service against a tutorial-grade FastAPI baseline with wrk.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of measured load per scenario and server")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unmeasured load before each measurement")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every measurement; the table shows medians")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIO_NAMES,
                        default=list(SCENARIO_NAMES), metavar="NAME",
                        help=f"which to run, of: {', '.join(SCENARIO_NAMES)}")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS),
                        help="servers to measure: ours, the tutorial-grade baseline, and the "
                             "HTTP no-op that the limit is computed from")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint ours and the baseline load; None: random weights "
                             "written to a temporary folder")
    parser.add_argument("--arch", default="tutorial_cnn",
                        choices=("tutorial_cnn", "resnet9", "whitened_vgg"),
                        help="architecture of the random-weights checkpoint (without "
                        "--checkpoint), served with its recipe's TTA (resnet9: flip, "
                        "whitened_vgg: flip)")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for our service, e.g. CNN_SERVE_WORKERS=1; "
                             "repeat for several")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (at most one per connection)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk's per-request timeout in seconds; slower counts as an error")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results to this file as JSON")
    parser.add_argument("--keep-logs", action="store_true",
                        help="print where the server logs are and keep them")
    return parser


def main(args: argparse.Namespace) -> int:
    if shutil.which(args.wrk) is None:
        print(f"error: {args.wrk!r} not found; install it (Debian: apt-get install wrk)",
              file=sys.stderr)
        return 2
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1:
        print("error: --duration must be > 0, --warmup >= 0, --rounds >= 1", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if s.name in args.scenarios]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        if args.keep_logs:
            tmp = Path(tempfile.mkdtemp(prefix="bench-serve-logs-"))
        images = make_images(tmp)
        checkpoint = args.checkpoint or make_checkpoint(tmp / f"random_{args.arch}.pt",
                                                        args.arch)
        if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
            print("warning: the machine is busy (load average above half the CPUs); "
                  "the numbers will be noisy", file=sys.stderr)
        described = machine()
        print(f"{described}; load average {loadavg()} (before); checkpoint "
              f"{checkpoint}; {args.duration:g} s per measurement after {args.warmup:g} s "
              f"warm-up, {args.rounds} round(s)")
        for key, path in images.items():
            print(f"  {key}: {path.name}, {path.stat().st_size:,} bytes")
        if args.ours_env:
            print(f"  ours with {' '.join(args.ours_env)}")
        costs = (measure_costs(args, chosen, images, checkpoint)
                 if {"ours", "noop"} <= set(args.targets) else None)
        running = stack.enter_context(servers(args, checkpoint, tmp, images["png32"]))
        results: dict[tuple[str, str], list[Result]] = {}
        for rnd in range(args.rounds):
            for s in chosen:
                order = [t for t in TARGETS if t in running]
                if rnd % 2:
                    order.reverse()
                for target in order:
                    server, image = running[target], images[s.image]
                    if args.warmup:
                        run_wrk(args, server, image, s.connections, args.warmup)
                    r = run_wrk(args, server, image, s.connections, args.duration)
                    results.setdefault((s.name, target), []).append(r)
                    print(f"  round {rnd + 1} {s.name:12} {target:8} {r.rps:9.1f} req/s  "
                          f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:8.2f} ms  "
                          f"err {r.errors} non-2xx {r.non2xx}  cpu {r.server_cpu:.2f}",
                          flush=True)
        rows = []
        for s in chosen:
            ours, base = (results.get((s.name, t)) for t in ("ours", "baseline"))
            rows.append((s, median_result(ours) if ours else None,
                         median_result(base) if base else None))
        print(f"\nload average {loadavg()} (after)")
        print_table(rows)
        if costs:
            print_limits(chosen, results, costs)
        if args.keep_logs:
            print(f"server logs in {tmp}")
        if args.json:
            args.json.write_text(json.dumps({
                "machine": described, "loadavg_after": loadavg(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "results": {f"{name}/{target}": [vars(r) for r in rs]
                            for (name, target), rs in results.items()},
                "costs": costs,
            }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
