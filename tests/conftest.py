"""Shared fixtures: the shared/ folder, the tiny CCSR config and a random tiny checkpoint.

CI clones the repository with shared/ beside it, so shared/ is found at
repo_root/../shared. The tiny checkpoint is random (official key layout,
.safetensors); no test downloads weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (docs, fixtures, seed) beside the repository."""
    return SHARED_DIR


@pytest.fixture(scope="session")
def tiny_config_path(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "ccsr-tiny.yaml"


@pytest.fixture(scope="session")
def tiny_config(tiny_config_path: Path):
    """CCSRConfig of the reduced test architecture (shared/fixtures/ccsr-tiny.yaml)."""
    from ccsr.model.config import CCSRConfig

    return CCSRConfig.from_yaml(tiny_config_path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:
    """A random tiny checkpoint in the official layout (.safetensors, fp32, seed 0)."""
    from ccsr.model.random import write_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "ccsr-tiny.safetensors"
    return write_random_checkpoint(tiny_config, path, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path, tiny_config):
    """CCSRModel (fp32, CPU) loaded from ``tiny_checkpoint``. Shared: do not modify it."""
    from ccsr.model.ccsr_model import CCSRModel

    return CCSRModel.from_file(tiny_checkpoint, tiny_config)
