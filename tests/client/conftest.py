"""A real `ccsr serve` (tiny random model, CPU, one API key) for the client tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_helpers import serve, small_photo

API_KEY = "client-test-key"
#: The fastest valid request: 3 steps = 2 network evaluations; 64x64 -> 128x128.
FAST = {"steps": 3, "scale": 2}


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def fast() -> dict:
    return dict(FAST)


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    with serve(tiny_checkpoint, tmp_path_factory.mktemp("client-server"), api_keys=[API_KEY]) as base:
        yield base


@pytest.fixture(scope="session")
def photo(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photograph, cropped square and shrunk to 64x64 so a run takes seconds."""
    src = fixtures_dir / "images" / "chelsea.png"
    return small_photo(src, tmp_path_factory.mktemp("photo") / "chelsea64.png")
