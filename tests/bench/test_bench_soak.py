"""bench/soak.py and bench/fuzz_images.py: their CLI, inputs and bookkeeping. (The long runs
are the soak's job; tests/app holds the short versions of each scenario.)"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bench import fuzz_images, soak, soak_rollout
from bench.serve import make_checkpoint
from models.checkpoint import read_checkpoint


def test_help_lists_the_scenarios_and_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        soak.get_args_parser().parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--scenarios", "--duration", "--overload-connections", "--fuzz-cases",
                 "--atheris-seconds"):
        assert flag in out
    assert "sustained" in out and "worker-failure" in out


def test_a_bad_scenario_name_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        soak.get_args_parser().parse_args(["--scenarios", "nope"])
    assert "fuzz-http" in capsys.readouterr().err


def test_every_scenario_has_a_runner() -> None:
    assert set(soak.RUNNERS) == set(soak.SCENARIOS)
    assert soak.MIXED_LUA.is_file() and soak.FAULTS.is_dir()


def test_the_mix_is_tiny_pngs_and_photos(tmp_path: Path) -> None:
    images = soak.make_images(tmp_path)
    files = soak.mix(images)
    assert files.count(images["png32"]) == 2 and len(files) == 4
    with Image.open(images["jpeg"]) as jpeg, Image.open(images["photo"]) as photo:
        assert (jpeg.format, jpeg.size) == ("JPEG", (1600, 1066))
        assert photo.format == "PNG"


def test_probe_summary_counts_outcomes_and_times_the_chosen_ones() -> None:
    results = [("200", 0.010, False), ("503", 0.002, True), ("503", 0.004, True)]
    assert soak.summary(results, "503") == \
        "{'200': 1, '503': 2}, latency p50 3.0 ms, p90 4.0 ms, max 4.0 ms"
    assert soak.summary([], None) == "{}"


def test_a_failed_check_is_remembered() -> None:
    ctx = soak.Context(soak.get_args_parser().parse_args([]), Path("."), Path("x"), {})
    assert ctx.check(True, "fine") == "ok"
    assert ctx.check(False, "overload: no recovery") == "FAILED"
    assert ctx.failures == ["overload: no recovery"]


def test_every_fuzz_seed_is_a_valid_image_of_its_format() -> None:
    seeds = fuzz_images.make_seeds()
    formats = {name.split("-")[0] for name in seeds}
    assert formats == {"png", "jpeg", "gif", "webp", "bmp", "tiff"}
    for data in seeds.values():
        assert fuzz_images.decode_outcome(data) == "ok"


def test_fuzz_cases_are_replayable_from_seed_and_index() -> None:
    seeds = fuzz_images.make_seeds()
    names = sorted(seeds)
    first = fuzz_images.case(7, 3, names, seeds)
    assert fuzz_images.case(7, 3, names, seeds) == first
    assert fuzz_images.case(8, 3, names, seeds) != first
    assert first[1] != seeds[first[0]]  # damaged


def test_png_crcs_are_recomputed_after_a_mutation() -> None:
    data = bytearray(fuzz_images.make_seeds()["png-rgb"])
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    fixed = fuzz_images.fix_png_crcs(bytes(data))
    length = struct.unpack(">I", fixed[8:12])[0]
    chunk = fixed[12:16 + length]
    assert struct.unpack(">I", fixed[16 + length:20 + length])[0] == zlib.crc32(chunk)


def test_decode_outcome_names_the_image_error() -> None:
    assert fuzz_images.decode_outcome(b"") == "EmptyImageError"
    assert fuzz_images.decode_outcome(b"not an image") == "UnsupportedImageError"


def test_the_rollout_swaps_between_two_checkpoints_of_one_model(tmp_path: Path) -> None:
    first = make_checkpoint(tmp_path / "a.pt")
    second = soak_rollout.variant(first, tmp_path / "b.pt")
    (state_a, meta_a, sha_a), (state_b, meta_b, sha_b) = map(read_checkpoint, (first, second))
    assert sha_a != sha_b
    assert (meta_a.arch, meta_a.input_size, meta_a.classes) == \
        (meta_b.arch, meta_b.input_size, meta_b.classes)
    assert state_a.keys() == state_b.keys()
    assert any(not state_a[k].equal(state_b[k]) for k in state_a)


def test_the_rollout_reads_reloads_and_served_models_from_the_metrics() -> None:
    samples = {
        ("cnn_serve_model_reloads_total", (("result", "ok"),)): 4.0,
        ("cnn_serve_model_info", (("arch", "a"), ("device", "cpu"), ("name", "m"),
                                  ("sha256", "aaa"))): 0.0,
        ("cnn_serve_model_info", (("arch", "a"), ("device", "cpu"), ("name", "m"),
                                  ("sha256", "bbb"))): 1.0,
    }
    assert soak_rollout.reload_count(samples, "ok") == 4.0
    assert soak_rollout.reload_count(samples, "failed") == 0.0
    assert soak_rollout.served_models(samples) == {"bbb"}
