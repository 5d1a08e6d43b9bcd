"""The tutorial-grade service `bench/serve.py` compares ours against. Deliberately naive.

What a first FastAPI wrapper around the CIFAR-10 tutorial usually looks like: an `async def`
handler that opens the upload with PIL, applies the tutorial's `Resize((32, 32))` and
`ToTensor()`, and calls the model, all on the event loop, one request at a time. The network
and weights are the same as ours (loaded from the same checkpoint); only the serving differs.
Do not copy this into the service: it is every anti-pattern in shared/STYLE.md that matters for
speed.

    BASELINE_MODEL_PATH=/tmp/ckpt.pt uvicorn bench.baseline_app:app --workers 1
"""

from __future__ import annotations

import os

import torch
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

from models.checkpoint import load_checkpoint

app = FastAPI(title="tutorial-grade baseline")

_loaded = load_checkpoint(os.environ["BASELINE_MODEL_PATH"])  # at import, as tutorials do
model = _loaded.model
classes = list(_loaded.meta.classes)
transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (as tutorials write it)
    image = Image.open(file.file).convert("RGB")
    x = transform(image).unsqueeze(0)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    best = int(probs.argmax())
    return {
        "class": classes[best],
        "confidence": float(probs[best]),
        "probabilities": dict(zip(classes, probs.tolist(), strict=True)),
    }
