"""convert: tutorial state_dicts and whole pickled models come over; code never runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from training import convert

READERS_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from torch.nn import Conv2d, Flatten, Linear, MaxPool2d, Sequential

    class Tudui(nn.Module):
        def __init__(self):
            super().__init__()
            self.model1 = Sequential(
                Conv2d(3, 32, 5, 1, 2), MaxPool2d(2), Conv2d(32, 32, 5, 1, 2), MaxPool2d(2),
                Conv2d(32, 64, 5, 1, 2), MaxPool2d(2), Flatten(), Linear(1024, 64),
                Linear(64, 10))

        def forward(self, x):
            return self.model1(x)

    torch.manual_seed(0)
    tudui = Tudui().eval()
    torch.save(tudui, sys.argv[1] + "/tudui_whole.pth")            # method 1: whole model
    torch.save(tudui.state_dict(), sys.argv[1] + "/tudui_sd.pth")  # method 2: recommended
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save({"x": x, "y": tudui(x)}, sys.argv[1] + "/expected.pt")
""")


@pytest.fixture(scope="module")
def readers_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files saved by a reader's own script, whose class lives in that script's __main__."""
    folder = tmp_path_factory.mktemp("reader")
    script = folder / "train_tudui.py"
    script.write_text(READERS_SCRIPT)
    subprocess.run([sys.executable, str(script), str(folder)], check=True, timeout=120)
    return folder


@pytest.mark.parametrize("name", ["tudui_whole.pth", "tudui_sd.pth"])
def test_a_readers_model_converts_and_computes_the_same(readers_files, tmp_path, name) -> None:
    out = tmp_path / "converted.pt"
    assert convert.cli([str(readers_files / name), str(out)]) == 0
    loaded = load_checkpoint(out)
    assert loaded.meta.arch == "tutorial_cnn" and loaded.meta.classes[5] == "dog"
    assert loaded.meta.mean == [0.0, 0.0, 0.0] and loaded.meta.std == [1.0, 1.0, 1.0]
    expected = torch.load(readers_files / "expected.pt", weights_only=True)
    with torch.no_grad():
        assert torch.allclose(loaded.model(expected["x"]), expected["y"], atol=1e-6)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("wrap", [lambda e: e, lambda e: {"model": e},
                                  lambda e: {"state_dict": e, "meta": {}}])
def test_convert_refuses_a_pickle_that_runs_code(tmp_path, wrap, capsys) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save(wrap(Evil(marker)), evil)
    assert convert.cli([str(evil), str(tmp_path / "out.pt")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


def test_a_stand_in_called_like_a_function_is_refused(tmp_path: Path) -> None:
    """A reader's-module global used as a function (REDUCE with arguments) is not a class."""
    script = tmp_path / "make.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        def make_weights(n):
            return torch.zeros(n)
        class Call:
            def __reduce__(self):
                return (make_weights, (3,))
        torch.save({{"w": Call()}}, {str(tmp_path / "f.pth")!r})
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    with pytest.raises(convert.ConversionError, match="not a module class"):
        convert.convert(tmp_path / "f.pth", tmp_path / "out.pt", classes=None,
                        mean=[0.0] * 3, std=[1.0] * 3)


def test_an_unknown_network_is_refused_with_its_shapes(tmp_path: Path) -> None:
    path = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(5, 3).state_dict(), path)
    with pytest.raises(convert.ConversionError, match="match neither tutorial_cnn nor vgg16"):
        convert.convert(path, tmp_path / "out.pt", classes=None, mean=[0.0] * 3, std=[1.0] * 3)
