"""Each checkpoint on real photos from outside CIFAR-10: the images Python packages ship.

    .venv/bin/pip install scikit-image     # not a dependency of the project
    .venv/bin/python scripts/real_photos.py models/cifar10_tutorial_cnn.pt \
        models/cifar10_whitened_vgg.pt

Photos: scikit-image's `chelsea` (a cat; examples/cat.png is the same photo), `horse` (a
horse's silhouette, black on white) and `rocket` (no CIFAR-10 class: the answer should be
unsure), plus every image in examples/. Prints the top two classes per photo and checkpoint,
through training.predict's `classify` (the service's decoding, TTA and temperature).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.checkpoint import load_checkpoint  # noqa: E402
from training.predict import classify  # noqa: E402

# name → (the class a person would say, or None where CIFAR-10 has none)
PACKAGED = {"chelsea": "cat", "horse": "horse", "rocket": None}


def photos() -> dict[str, tuple[bytes, str | None]]:
    found: dict[str, tuple[bytes, str | None]] = {}
    try:
        import skimage.data
    except ImportError:
        print("scikit-image is not installed: only examples/", file=sys.stderr)
    else:
        for name, expected in PACKAGED.items():
            pixels = np.asarray(getattr(skimage.data, name)())
            if pixels.dtype == bool:  # the silhouette: True is the horse, drawn black
                pixels = np.where(pixels, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, "PNG")
            found[f"skimage:{name}"] = (buf.getvalue(), expected)
    for path in sorted((REPO / "examples").glob("*.*")):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}:
            found[f"examples/{path.name}"] = (path.read_bytes(), path.stem.split("_")[0])
    return found


def main(checkpoints: list[str]) -> None:
    images = photos()
    for checkpoint in checkpoints:
        loaded = load_checkpoint(checkpoint)
        classes = loaded.meta.classes
        print(f"\n{Path(checkpoint).name} ({loaded.meta.arch}, tta {loaded.meta.tta})")
        for name, (data, expected) in images.items():
            probs = classify(loaded, data)
            top = probs.topk(2)
            ranked = ", ".join(f"{classes[i]} {float(p):.1%}"
                               for p, i in zip(top.values, top.indices, strict=True))
            print(f"  {name:22} expected {expected or '(none)':8} → {ranked}")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(REPO / "models" / "cifar10_tutorial_cnn.pt")])
