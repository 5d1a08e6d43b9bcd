"""POST /predict and /predict/batch: answers, odd-but-valid images, the error matrix, API key.

(File names carry a `route_` prefix: pytest's default import mode needs test basenames that
are unique across tests/.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from app_support import (
    ACCEPTED_TEXT,
    FIXED_PROBABILITIES,
    encode,
    png,
    png_bomb,
    png_header_only,
    settings_for,
    softmax_sum,
)
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from models.checkpoint import load_checkpoint
from models.classes import CIFAR10_CLASSES
from models.images import decode_image
from models.preprocess import image_to_uint8, normalize


def post_image(client: TestClient, data: bytes, query: str = "", **kwargs: object):
    return client.post(f"/predict{query}", files={"file": ("x.png", data, "image/png")}, **kwargs)


def direct_probabilities(checkpoint: Path, data: bytes) -> torch.Tensor:
    """What the network says about `data`, computed here without the service."""
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    img = decode_image(data, max_pixels=10**7, target_size=meta.input_size)
    x = normalize(image_to_uint8(img, meta.input_size).unsqueeze(0), meta.mean, meta.std)
    with torch.inference_mode():
        return torch.softmax(loaded.model(x) / meta.temperature, dim=1)[0]


# --- answers -----------------------------------------------------------------------------------

def test_predict_returns_class_probabilities_top_k_and_model(client: TestClient) -> None:
    response = post_image(client, png())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"class", "class_index", "confidence", "probabilities", "top_k", "model"}
    assert list(body["probabilities"]) == list(CIFAR10_CLASSES)
    assert softmax_sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    best = max(body["probabilities"], key=body["probabilities"].get)
    assert body["class"] == best == CIFAR10_CLASSES[body["class_index"]]
    assert body["confidence"] == body["probabilities"][best]
    assert [e["class"] for e in body["top_k"]][0] == best
    assert len(body["top_k"]) == 3  # the default
    service = client.app.state.service
    assert body["model"] == {
        "name": "random_cnn", "arch": "tutorial_cnn", "sha256": service.predictor.sha256[:12]
    }


def test_predict_probabilities_match_a_direct_model_call(
    client: TestClient, checkpoint: Path
) -> None:
    data = encode(Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 40).convert("RGB"), "PNG")
    expected = direct_probabilities(checkpoint, data)
    got = post_image(client, data).json()["probabilities"]
    assert list(got.values()) == pytest.approx(expected.tolist(), abs=1e-6)


def test_predict_fixed_model_gives_hand_computed_probabilities(
    make_client: Callable[..., TestClient], fixed_checkpoint: Path
) -> None:
    # Zero weights, last bias T·ln(i+1), temperature T: softmax(logits / T) = (i+1)/55.
    client = make_client(fixed_checkpoint)
    body = post_image(client, png(), "?top_k=10").json()
    assert list(body["probabilities"].values()) == pytest.approx(FIXED_PROBABILITIES, abs=1e-6)
    assert body["class"] == "truck" and body["class_index"] == 9
    assert body["confidence"] == pytest.approx(10 / 55, abs=1e-6)
    assert [e["class"] for e in body["top_k"]] == list(reversed(CIFAR10_CLASSES))


@pytest.mark.parametrize("k", [1, 4, 10])
def test_predict_top_k_lists_the_k_most_probable_classes_best_first(
    client: TestClient, k: int
) -> None:
    body = post_image(client, png(), f"?top_k={k}").json()
    ranked = sorted(body["probabilities"].items(), key=lambda kv: kv[1], reverse=True)[:k]
    assert [(e["class"], e["probability"]) for e in body["top_k"]] == ranked


def test_predict_default_top_k_comes_from_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(default_top_k=7)
    assert len(post_image(client, png()).json()["top_k"]) == 7


def test_predict_default_top_k_above_the_class_count_lists_every_class(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(default_top_k=50)
    assert len(post_image(client, png()).json()["top_k"]) == 10


# --- odd but valid images ----------------------------------------------------------------------

def _frames_gif() -> bytes:
    frames = [Image.new("P", (20, 20), i) for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _mode(mode: str, fmt: str, **params: object) -> Callable[[], bytes]:
    def make() -> bytes:
        base = Image.radial_gradient("L").resize((40, 30))
        if mode in ("I;16", "I", "F"):
            img = base.convert("I").point(lambda v: v * 200).convert(mode) if mode != "F" \
                else base.convert("F")
        else:
            img = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                      base)).convert(mode)
        return encode(img, fmt, **params)
    return make


ODD_BUT_VALID = {
    "png-1bit": _mode("1", "PNG"),
    "png-L": _mode("L", "PNG"),
    "png-LA": _mode("LA", "PNG"),
    "png-P": _mode("P", "PNG"),
    "png-P-transparency": lambda: encode(Image.new("P", (8, 8), 0), "PNG", transparency=0),
    "png-RGBA": _mode("RGBA", "PNG"),
    "png-16bit-grey": _mode("I;16", "PNG"),
    "jpeg-RGB": _mode("RGB", "JPEG"),
    "jpeg-L": _mode("L", "JPEG"),
    "jpeg-CMYK": _mode("CMYK", "JPEG"),
    "jpeg-progressive": _mode("RGB", "JPEG", progressive=True),
    "webp-lossy": _mode("RGB", "WEBP"),
    "webp-lossless-RGBA": _mode("RGBA", "WEBP", lossless=True),
    "gif-animated": _frames_gif,
    "bmp-RGB": _mode("RGB", "BMP"),
    "bmp-1bit": _mode("1", "BMP"),
    "tiff-RGB": _mode("RGB", "TIFF"),
    "tiff-CMYK": _mode("CMYK", "TIFF"),
    "tiff-32bit-int": _mode("I", "TIFF"),
    "tiff-float": _mode("F", "TIFF"),
    "tiff-deflate": _mode("RGB", "TIFF", compression="tiff_adobe_deflate"),
    "one-pixel": lambda: png((1, 1)),
    "very-wide": lambda: png((2000, 1)),
}


@pytest.mark.parametrize("make", ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
def test_predict_accepts_odd_but_valid_image(client: TestClient, make: Callable[[], bytes]) -> None:
    response = post_image(client, make())
    assert response.status_code == 200, response.text
    assert softmax_sum(response.json()["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_recognises_format_by_content_not_name_or_type(client: TestClient) -> None:
    response = client.post(
        "/predict", files={"file": ("photo.jpg", png(), "application/octet-stream")}
    )
    assert response.status_code == 200


def test_predict_applies_exif_orientation(client: TestClient) -> None:
    img = Image.linear_gradient("L").resize((48, 32)).convert("RGB")
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    tagged = post_image(client, encode(img, "PNG", exif=exif)).json()["probabilities"]
    upright = post_image(client, encode(img.transpose(Image.Transpose.ROTATE_270), "PNG")).json()
    assert tagged == upright["probabilities"]


# --- the error matrix --------------------------------------------------------------------------

ERROR_MATRIX = [
    # id, multipart files (or raw body), query, status, words the detail must contain
    ("missing-field", {"image": ("x.png", png(), "image/png")}, "", 422,
     "missing multipart field 'file'"),
    ("no-multipart-at-all", b"just bytes", "", 422, "missing multipart field 'file'"),
    ("empty-upload", {"file": ("x.png", b"", "image/png")}, "", 400, "empty"),
    ("text-file", {"file": ("x.png", b"hello, world", "image/png")}, "", 415, ACCEPTED_TEXT),
    ("pdf", {"file": ("x.pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "application/pdf")}, "",
     415, ACCEPTED_TEXT),
    ("svg", {"file": ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")},
     "", 415, ACCEPTED_TEXT),
    ("eps", {"file": ("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n", "image/eps")},
     "", 415, ACCEPTED_TEXT),
    ("truncated-png", {"file": ("x.png", png((64, 64))[:-40], "image/png")}, "", 400,
     "truncated or corrupt"),
    ("corrupt-jpeg", {"file": ("x.jpg", encode(Image.new("RGB", (64, 64)), "JPEG")[:200]
                               + b"\x00" * 50, "image/jpeg")}, "", 400, "truncated or corrupt"),
    ("over-byte-limit", {"file": ("x.bmp", encode(Image.new("RGB", (200, 200)), "BMP"),
                                  "image/bmp")}, "", 413, "100,000-byte limit per image"),
    ("header-claims-65000x65000", {"file": ("x.png", png_header_only(65000, 65000), "image/png")},
     "", 413, "more pixels than the limit of 1,000,000"),
    ("over-pixel-limit", {"file": ("x.png", png((1100, 1000)), "image/png")}, "", 413,
     "the limit is 1,000,000"),
    ("decompression-bomb", {"file": ("x.png", png_bomb(), "image/png")}, "", 413,
     "8000×8000 = 64,000,000 pixels"),
    ("top-k-zero", {"file": ("x.png", png(), "image/png")}, "?top_k=0", 422,
     "query parameter 'top_k'"),
    ("top-k-above-classes", {"file": ("x.png", png(), "image/png")}, "?top_k=11", 422,
     "less than or equal to 10"),
    ("top-k-not-a-number", {"file": ("x.png", png(), "image/png")}, "?top_k=three", 422,
     "valid integer"),
]


@pytest.fixture(scope="module")
def limited_client(checkpoint: Path) -> Iterator[TestClient]:
    settings = settings_for(checkpoint, max_upload_bytes=100_000, max_pixels=1_000_000)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("payload", "query", "status", "words"),
    [case[1:] for case in ERROR_MATRIX], ids=[case[0] for case in ERROR_MATRIX],
)
def test_predict_rejects_bad_input_with_a_clear_4xx(
    limited_client: TestClient, payload: object, query: str, status: int, words: str
) -> None:
    if isinstance(payload, bytes):
        response = limited_client.post(
            f"/predict{query}", content=payload, headers={"content-type": "image/png"}
        )
    else:
        response = limited_client.post(f"/predict{query}", files=payload)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail


@pytest.mark.parametrize(
    "warnings_as", [
        pytest.param("error", id="bomb-warning-as-error"),
        pytest.param("ignore", id="bomb-warning-ignored",
                     marks=pytest.mark.filterwarnings(
                         "ignore::PIL.Image.DecompressionBombWarning")),
    ],
)
def test_predict_rejects_header_between_pillow_thresholds_as_too_large(
    limited_client: TestClient, warnings_as: str
) -> None:
    # 100 MP: above Pillow's warning threshold (89 MP), below its hard error (179 MP).
    response = post_image(limited_client, png_header_only(10000, 10000))
    assert response.status_code == 413
    assert "1,000,000" in response.json()["detail"]


# --- /predict/batch ----------------------------------------------------------------------------

def _colors(n: int) -> list[bytes]:
    return [png((30 + i, 20), (40 * i % 256, 255 - 30 * i % 256, 90)) for i in range(n)]


def test_predict_batch_answers_each_image_in_upload_order(client: TestClient) -> None:
    images = _colors(5)
    response = client.post(
        "/predict/batch?top_k=2", files=[("files", (f"{i}.png", d, "image/png"))
                                         for i, d in enumerate(images)]
    )
    assert response.status_code == 200
    batch = response.json()["predictions"]
    singles = [post_image(client, d, "?top_k=2").json() for d in images]
    assert len(batch) == 5
    for got, want in zip(batch, singles, strict=True):
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
        assert [e["class"] for e in got["top_k"]] == [e["class"] for e in want["top_k"]]


def test_predict_batch_names_the_bad_file(client: TestClient) -> None:
    files = [("files", ("good.png", png(), "image/png")),
             ("files", ("notes.txt", b"not an image", "text/plain"))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("files[1] (notes.txt): not an image")


def test_predict_batch_rejects_more_files_than_the_cap(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_batch_files=2)
    files = [("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(_colors(3))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert "3 files in one request; the limit is 2" in response.json()["detail"]


def test_predict_batch_without_files_is_422(client: TestClient) -> None:
    response = client.post("/predict/batch", files={"file": ("x.png", png(), "image/png")})
    assert response.status_code == 422
    assert "missing multipart field 'files'" in response.json()["detail"]


# --- the multipart body, read by app/http/multipart.py -----------------------------------------

def _raw_multipart(body: bytes, boundary: str = "bnd") -> dict[str, object]:
    return {"content": body,
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"--bnd\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + b"x" * 50,
         "not closed by the boundary"),
        (b"--bnd\r\nContent-Type: image/png\r\n\r\nxx\r\n--bnd--", "no Content-Disposition"),
        (b"nothing like it", "does not contain the boundary"),
    ],
    ids=["truncated", "no-disposition", "no-boundary"],
)
def test_predict_rejects_malformed_multipart_with_400(
    client: TestClient, body: bytes, words: str
) -> None:
    response = client.post("/predict", **_raw_multipart(body))
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("the body is not valid multipart/form-data") and words in detail


def test_predict_uses_the_last_file_field_and_ignores_other_fields(client: TestClient) -> None:
    response = client.post("/predict", files=[("file", ("junk.txt", b"junk", "text/plain")),
                                              ("caption", (None, b"a cat")),
                                              ("file", ("x.png", png(), "image/png"))])
    assert response.status_code == 200, response.text


def test_predict_refuses_a_file_over_the_limit_that_fits_the_multipart_slack(
    limited_client: TestClient,
) -> None:
    data = b"\x89PNG" + b"\0" * 100_001  # the guard allows 16 KiB of multipart framing
    response = post_image(limited_client, data)
    assert response.status_code == 413
    assert "the file is 100,005 bytes, over the 100,000-byte limit" in response.json()["detail"]


def test_predict_batch_with_far_too_many_parts_is_413(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(max_batch_files=2)
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(40)]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 413
    assert "more than 18 parts in one request; the limit is 2 files" in response.json()["detail"]


@pytest.mark.parametrize(("path", "field", "kind"),
                         [("/predict", "file", "string"), ("/predict/batch", "files", "array")])
def test_the_multipart_body_is_documented(
    client: TestClient, path: str, field: str, kind: str
) -> None:
    body = client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] and schema["required"] == [field]
    assert schema["properties"][field]["type"] == kind


# --- API key -----------------------------------------------------------------------------------

KEY = "s3cret-test-key"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key-123"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"X-API-Key": "wrong-key-123"}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"authorization": f"bearer {KEY}"}, 200),
        ({"X-API-Key": KEY}, 200),
    ],
)
def test_predict_with_api_key_configured_needs_the_key(
    make_client: Callable[..., TestClient], headers: dict[str, str], status: int
) -> None:
    client = make_client(api_key=KEY)
    for path, files in [("/predict", {"file": ("x.png", png(), "image/png")}),
                        ("/predict/batch", {"files": ("x.png", png(), "image/png")})]:
        response = client.post(path, files=files, headers=headers)
        assert response.status_code == status, (path, response.text)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer <key>" in response.json()["detail"]


def test_api_key_leaves_health_model_and_metrics_open(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_key=KEY)
    for path in ("/healthz", "/model", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_unauthenticated_upload_is_refused_before_its_body_is_read(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_key=KEY, max_upload_bytes=1000)
    # Over the byte limit too, but the missing key is what it hears about first.
    response = post_image(client, b"\x00" * 5000)
    assert response.status_code == 401
