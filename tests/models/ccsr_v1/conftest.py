"""Fixtures for the pipeline tests."""

from __future__ import annotations

from typing import Callable

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def chelsea(fixtures_dir) -> Callable[[int, int], Image.Image]:
    """``chelsea(w, h)``: the chelsea photo as RGB, resized (bicubic) to w x h:
    a real picture small enough for the tiny model's quick requests."""

    def load(w: int, h: int) -> Image.Image:
        with Image.open(fixtures_dir / "images" / "chelsea.png") as im:
            return im.convert("RGB").resize((w, h), Image.BICUBIC)

    return load
