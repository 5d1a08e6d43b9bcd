"""Without the train extra, `python -m training.run` says how to get it in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("missing", ["tensorboard", "matplotlib", "tqdm"])
def test_run_without_the_train_extra_names_the_pip_command(missing: str) -> None:
    # sys.modules[name] = None: the package counts as not installed (find_spec gives None).
    code = (f"import runpy, sys; sys.modules[{missing!r}] = None; "
            "sys.argv = ['training.run', '--help']; "
            "runpy.run_module('training.run', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "training needs tqdm, tensorboard and matplotlib: pip install '.[train]'\n"
    )
