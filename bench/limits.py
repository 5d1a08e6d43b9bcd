"""What the machine can physically do for one upload: the limit bench/serve.py measures us by.

    limit (req/s) = n ÷ (fastest decode + resize of the file, one thread
                         + the model's share of a batch of 32, one thread
                         + one request's HTTP cost: n ÷ the no-op server's req/s)

where n is the number of cores, or of connections when fewer (one connection keeps one core
busy at most).

The decode candidates give the picture our service feeds the network: the same Pillow resize,
and for JPEG the same DCT-scaled draft (to 8× the input size); libspng and torchvision
decoders stand beside Pillow. The model share is the served model as the service runs it
(`Predictor.predict`: BatchNorm folded, channels-last, its TTA and precision). Each figure is
the fastest of several rounds: on a shared machine noise only ever adds.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

BATCH = 32  # the model share is per image of a full micro-batch
ROUND_S = 0.05  # each timed round runs at least this long


def fastest_ms(call: Callable[[], object], rounds: int = 7) -> float:
    """Milliseconds per call: the fastest round's mean, rounds of ≥ ROUND_S after a warm-up."""
    call()
    started, n = time.perf_counter(), 1
    call()
    n = max(1, int(ROUND_S / max(time.perf_counter() - started, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1000


def decode_candidates(data: bytes, size: int) -> dict[str, Callable[[], object]]:
    """Ways to turn `data` into size×size RGB uint8 pixels, by name."""
    import torch
    import torchvision.io as tvio
    from PIL import Image

    from models.preprocess import decode_to_uint8, resize

    def pillow() -> np.ndarray:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size * 8, size * 8))
            rgb = img.convert("RGB")
        return np.asarray(resize(rgb, size))

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # once, as a server would

    def torchvision() -> torch.Tensor:
        with warnings.catch_warnings():  # deprecated in 0.29 for torchcodec; still a candidate
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = tvio.decode_image(encoded, mode=tvio.ImageReadMode.RGB)
        return torch.nn.functional.interpolate(pixels[None].float(), size=(size, size),
                                               mode="bilinear", antialias=True)

    found: dict[str, Callable[[], object]] = {
        "ours": lambda: decode_to_uint8(data, max_pixels=10**9, size=size),
        "pillow": pillow,
        "torchvision": torchvision,
    }
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        import pyspng

        def libspng() -> np.ndarray:
            pixels = pyspng.load(data)
            return np.asarray(resize(Image.fromarray(pixels).convert("RGB"), size))

        found["libspng+pillow"] = libspng
    return found


def decode_ms(path: Path, size: int) -> dict[str, float]:
    """Each candidate's one-thread ms for the file (a failing candidate is left out)."""
    import torch

    torch.set_num_threads(1)
    data = path.read_bytes()
    timings = {}
    for name, call in decode_candidates(data, size).items():
        try:
            timings[name] = fastest_ms(call)
        except Exception:  # noqa: BLE001 - a decoder that cannot read this file is no candidate
            continue
    return timings


def model_ms(checkpoint: Path, precision: str = "fp32", tta: str | None = None) -> float:
    """The served model's one-thread ms per image in a batch of BATCH."""
    import torch

    from app.inference.predictor import Predictor

    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**9, precision=precision,
                                          tta=tta)
    size = predictor.input_size
    images = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(BATCH)]
    return fastest_ms(lambda: predictor.predict(images)) / BATCH


def limit_rps(cores: int, decode: float, model: float, http: float) -> float:
    """Requests per second the cores allow when each costs decode + model + http ms."""
    return cores * 1000 / (decode + model + http)


def share_goal(share: float, goal: float | None, what: str) -> str:
    return "" if goal is None else f"{what}≥{goal:.0%} {'ok' if share >= goal else 'MISSED'}"


def limit_table(rows: list[dict], cores: int, model: float) -> list[list[str]]:
    """One row per scenario: each dict has name, connections, ours and noop (req/s), decode
    ({candidate: ms}), and the goals min_limit_share / min_noop_share (or None). With fewer
    connections than cores, only that many requests can run at once: they are the cores."""
    table = [["scenario", "noop req/s", "http ms", "decode ms (fastest)", "ours decode ms",
              "model ms", "limit req/s", "ours req/s", "ours/limit", "ours/noop", "goal"]]
    for row in rows:
        busy = min(cores, row["connections"])
        fastest = min(row["decode"], key=row["decode"].get)
        decode, http = row["decode"][fastest], busy * 1000 / row["noop"]
        limit = limit_rps(busy, decode, model, http)
        share, noop_share = row["ours"] / limit, row["ours"] / row["noop"]
        goals = [share_goal(share, row["min_limit_share"], "limit"),
                 share_goal(noop_share, row["min_noop_share"], "noop")]
        table.append([row["name"], f"{row['noop']:,.0f}", f"{http:.3f}",
                      f"{decode:.3f} ({fastest})", f"{row['decode'].get('ours', 0):.3f}",
                      f"{model:.3f}", f"{limit:,.0f}", f"{row['ours']:,.1f}", f"{share:.0%}",
                      f"{noop_share:.0%}", ", ".join(g for g in goals if g)])
    return table
