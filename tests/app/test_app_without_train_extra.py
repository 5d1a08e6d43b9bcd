"""The service never needs the train extra: the serving image is built without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# In a fresh interpreter: refuse the train extra's packages, import every module of app/ and
# models/, then start the app with its lifespan (the shipped checkpoint) and classify an image.
# Prints the files that asked for one of them: torch/hub.py tries tqdm and does without it.
SERVE_WITHOUT_TRAIN_EXTRA = """
import importlib, io, pkgutil, sys

TRAIN_EXTRA = ("tensorboard", "matplotlib", "tqdm")
askers = set()

class RefuseTrainExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TRAIN_EXTRA:
            frame = sys._getframe(1)
            while frame.f_code.co_filename.startswith("<frozen"):
                frame = frame.f_back
            askers.add(frame.f_code.co_filename)
            raise ImportError(f"{name} is in the train extra")
        return None

sys.meta_path.insert(0, RefuseTrainExtra())
import app, models
for package in (app, models):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)

from fastapi.testclient import TestClient
from PIL import Image
from app.main import create_app

png = io.BytesIO()
Image.new("RGB", (32, 32), (200, 30, 30)).save(png, "PNG")
with TestClient(create_app()) as client:
    response = client.post("/predict", files={"file": ("red.png", png.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
print(*sorted(askers), sep="\\n")
"""


def test_the_service_imports_and_predicts_without_the_train_extra() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("CNN_SERVE_") and k.upper() != "MODEL_PATH"}
    result = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TRAIN_EXTRA], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = [REPO / "app", REPO / "models"]
    askers = [Path(line) for line in result.stdout.splitlines()]
    assert [f for f in askers if any(f.is_relative_to(folder) for folder in ours)] == []
