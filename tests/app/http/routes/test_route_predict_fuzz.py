"""Mutated uploads through the whole app: every answer is a 200 or a 4xx with a JSON detail,
never a 5xx, and nothing stays admitted afterwards. (bench/soak.py's fuzz-http scenario sends
thousands through a real server; tests/models/test_models_images_fuzz.py fuzzes the decoder.)
"""

from __future__ import annotations

import random
import warnings

import pytest
from app_support import encode
from fastapi.testclient import TestClient
from PIL import Image

FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]


def originals() -> list[bytes]:
    img = Image.linear_gradient("L").resize((20, 12)).convert("RGB")
    return [encode(img, fmt) for fmt in FORMATS] + [encode(img.convert("RGBA"), "PNG"),
                                                    encode(img.convert("CMYK"), "TIFF")]


def mutated(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out)) if out else 0
        kind = rng.randrange(4)
        if kind == 0 and out:
            out[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[i:i + 4] = rng.choice([0, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]).to_bytes(4, "big")
        elif kind == 2:
            del out[i:i + rng.randint(1, 64)]
        else:
            del out[i:]
    return bytes(out)


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_mutated_uploads_never_get_a_5xx(client: TestClient, route: str) -> None:
    rng = random.Random(route)
    seeds = originals()
    statuses = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warnings about odd tags, in this process
        for _ in range(120):
            if route == "/predict":
                files = [("file", ("x", mutated(rng.choice(seeds), rng), "image/png"))]
            else:
                files = [("files", (f"{i}", mutated(rng.choice(seeds), rng), "image/png"))
                         for i in range(rng.randint(1, 3))]
            response = client.post(route, files=files)
            statuses.add(response.status_code)
            assert response.status_code in (200, 400, 413, 415), response.text
            if response.status_code != 200:
                assert response.json()["detail"]
    assert client.app.state.service.batcher.admitted == 0
    assert {200, 400} <= statuses  # the mutations both spared and broke images
