"""Predictor: bytes → probabilities, nothing about HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from app_support import FIXED_PROBABILITIES, png

import models.png
from app.inference.predictor import Predictor
from models.images import UnsupportedImageError
from models.preprocess import normalize


def test_fixed_model_gives_hand_computed_probabilities(fixed_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(fixed_checkpoint, max_pixels=10**6)
    [row] = predictor.predict([predictor.decode(png())])
    assert row == pytest.approx(FIXED_PROBABILITIES, abs=1e-6)


def test_rows_are_softmax_of_logits_over_temperature(checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    images = [predictor.decode(png(color=(i * 50, 255 - i * 50, 7))) for i in range(4)]
    meta = predictor.meta
    with torch.inference_mode():
        logits = predictor.model(normalize(torch.stack(images), meta.mean, meta.std))
    expected = torch.softmax(logits / meta.temperature, dim=1)
    batched = torch.tensor(predictor.predict(images))
    one_by_one = torch.tensor([predictor.predict([img])[0] for img in images])
    torch.testing.assert_close(batched, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(one_by_one, expected, atol=1e-6, rtol=0)


def test_decode_gives_uint8_at_the_input_size(checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    tensor = predictor.decode(png((300, 200)))
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, 32, 32)


def test_decode_raises_image_errors(checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    with pytest.raises(UnsupportedImageError):
        predictor.decode(b"GIF89a but not really")


def test_describe_names_the_checkpoint(checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    assert predictor.describe() == {
        "name": "random_cnn", "arch": "tutorial_cnn", "sha256": predictor.sha256[:12]
    }


def test_channels_last_gives_the_same_probabilities(checkpoint: Path) -> None:
    fast = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    plain = Predictor.from_checkpoint(checkpoint, max_pixels=10**6, channels_last=False)
    assert fast.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    first = next(fast.model.parameters())
    assert first.is_contiguous(memory_format=torch.channels_last)
    images = [fast.decode(png(color=(i * 60, 20, 255 - i * 60))) for i in range(3)]
    torch.testing.assert_close(
        torch.tensor(fast.predict(images)), torch.tensor(plain.predict(images)),
        atol=1e-6, rtol=0,
    )
    # Any uint8 CHW tensor will do, not only decode()'s views of HWC arrays.
    assert fast.predict([img.contiguous() for img in images]) == fast.predict(images)


def test_predict_payloads_decodes_bytes_and_puts_errors_in_their_place(
    checkpoint: Path,
) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    red, blue = png(color=(255, 0, 0)), png(color=(0, 0, 255))
    results = predictor.predict_payloads([red, b"not an image", predictor.decode(blue)])
    expected = predictor.predict([predictor.decode(red), predictor.decode(blue)])
    assert isinstance(results[1], UnsupportedImageError)
    torch.testing.assert_close(
        torch.tensor([results[0], results[2]]), torch.tensor(expected), atol=1e-6, rtol=0
    )
    assert predictor.predict_payloads([b""])[0].__class__.__name__ == "EmptyImageError"


@pytest.mark.parametrize("libspng", [True, False])
def test_the_predictor_uses_libspng_only_when_asked(
    checkpoint: Path, libspng: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real_load = models.png.pyspng.load

    def load(data: bytes, fmt: str) -> object:
        calls.append(fmt)
        return real_load(data, fmt)

    monkeypatch.setattr(models.png.pyspng, "load", load)
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6, libspng=libspng)
    calls.clear()  # the warm-up's own 32×32 PNG went the same way
    photo = png(size=(120, 80))
    assert predictor.decode(photo).shape == (3, 32, 32)
    assert calls == (["RGB"] if libspng else [])


def test_timing_one_image_reports_its_fastest_call_so_a_busy_moment_does_not_count(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The idle fast path is switched on or off by this figure at startup; a median let
    # a few calls slowed by a neighbouring process switch it off for the process's life.
    predictor = Predictor.from_checkpoint(checkpoint, max_pixels=10**6)
    real = predictor.predict_payloads
    calls: list[int] = []

    def all_but_one_slowed(payloads: list[bytes]) -> list[object]:
        calls.append(1)
        if len(calls) != 3:
            time.sleep(0.2)  # stands in for a call that lost its core to another process
        return real(payloads)

    monkeypatch.setattr(predictor, "predict_payloads", all_but_one_slowed)
    assert predictor.time_one_image(32, repeats=5) < 0.2
    assert len(calls) == 5
