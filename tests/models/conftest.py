from __future__ import annotations

import pytest
from png_corpus import CountingSpng

import models.png


@pytest.fixture
def spng(monkeypatch: pytest.MonkeyPatch) -> CountingSpng:
    """pyspng as models/png.py sees it, counting its calls."""
    counting = CountingSpng()
    monkeypatch.setattr(models.png, "pyspng", counting)
    return counting
