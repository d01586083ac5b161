"""Shared fixtures: the in-repo fixtures folder, the tiny CCSR config and a random tiny checkpoint.

Everything the tests read lives in ``tests/fixtures`` (photos with their
licences in ``images/SOURCES.md``, the tiny config), so a fresh clone with
nothing beside it runs the suite. The tiny checkpoint is random (official key
layout, .safetensors); no test downloads weights.
"""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per pytest-xdist worker (before torch is imported, and
    # inherited by the servers and workers the tests spawn): two workers with
    # two OpenMP threads each on two cores spin against each other and run the
    # model tests 3-4 x slower than one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys

import pytest

# The service tests' helpers (svc_helpers.py) serve every folder's tests.
sys.path.insert(0, str(Path(__file__).resolve().parent / "service"))

# Sets the environment Ray reads when first imported (loopback only, no usage
# stats); it must come before any test module imports ray.
from ccsr.testing import ray_cluster as ray_testing

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Test files that start a Ray cluster: they run one after another on one
#: pytest-xdist worker (two local clusters at once double the memory and race
#: for ports).
RAY_FILES = ("test_ray_",)
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh), keep each test
    file on one worker, so module-scoped servers and models start once, and put
    the Ray files in one group. Without xdist the marks change nothing."""
    for item in items:
        name = item.path.name
        group = "ray" if name.startswith(RAY_FILES) else str(item.path.relative_to(REPO_ROOT))
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/fixtures``: photos (``images/``) and the tiny config."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def tiny_config_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ccsr-tiny.yaml"


@pytest.fixture(scope="session")
def tiny_config(tiny_config_path: Path):
    """CCSRConfig of the reduced test architecture (tests/fixtures/ccsr-tiny.yaml)."""
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig

    return CCSRConfig.from_yaml(tiny_config_path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:
    """A random tiny checkpoint in the official layout (.safetensors, fp32, seed 0)."""
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "ccsr-tiny.safetensors"
    return write_random_checkpoint(tiny_config, path, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path, tiny_config):
    """CCSRModel (fp32, CPU) loaded from ``tiny_checkpoint``. Shared: do not modify it."""
    from ccsr.models.ccsr_v1.networks.model import CCSRModel

    return CCSRModel.from_file(tiny_checkpoint, tiny_config)


#: Seconds per step of the fake engine inside the Ray test cluster's actors.
RAY_FAKE_STEP_SECONDS = 0.05


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster on loopback: a head and two worker nodes, each offering
    one ``ccsr_worker`` (standing in for a GPU; see ccsr.testing.ray_cluster).

    One per test module (it costs about 1.3 GB and 10-20 s to start); its
    actors run the fake engine at ``RAY_FAKE_STEP_SECONDS`` per step.
    """
    cluster = ray_testing.LocalCluster(2, env={"CCSR_FAKE_STEP_SECONDS": RAY_FAKE_STEP_SECONDS})
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture()
def small(monkeypatch) -> None:
    """Requests diffuse at 128 px instead of 512 (the minimum short side), for quick engine tests."""
    import ccsr.models.ccsr_v1.params as params_mod

    monkeypatch.setattr(params_mod, "NATIVE_SIZE", 128)


@pytest.fixture(scope="session")
def v2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CCSR-v2 folder in the official layout (1.6 MB, about 2 s),
    as ``ccsr weights random --model ccsr-v2`` writes it."""
    from ccsr.models.ccsr_v2.random_weights import write_random_weights

    return write_random_weights(tmp_path_factory.mktemp("v2") / "weights", arch="tiny", seed=0)


@pytest.fixture(scope="session")
def v2_upscaler(v2_weights: Path):
    """The tiny CCSR-v2 engine on the CPU in fp32."""
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    return V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32")
