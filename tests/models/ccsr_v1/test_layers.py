"""The engine's layers import downwards only: the model never reaches up into
the pipeline or the service (the training beta schedule lives in the model)."""

from __future__ import annotations

import ast
from pathlib import Path

import ccsr.models.ccsr_v1.networks

UPPER = ("ccsr.engine", "ccsr.service", "ccsr.jobs", "ccsr.web", "ccsr.client", "ccsr.apps")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_model_imports_no_upper_layer():
    found = {
        f"{path.name}: {name}"
        for path in Path(ccsr.models.ccsr_v1.networks.__file__).parent.glob("*.py")
        for name in imported_modules(path)
        if name.startswith(UPPER)
    }
    assert not found, f"ccsr.models.ccsr_v1.networks imports upper layers: {sorted(found)}"


def test_schedule_uses_the_model_betas():
    from ccsr.models.ccsr_v1.networks.betas import train_betas
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import schedule_buffers
    from ccsr.models.ccsr_v1 import schedule

    assert schedule.train_betas is train_betas
    cfg = CCSRConfig()
    buffers = schedule_buffers(cfg)
    assert buffers["betas"].shape == (cfg.timesteps,)
    assert abs(float(buffers["betas"][0]) - cfg.linear_start) < 1e-9
    assert abs(float(buffers["betas"][-1]) - cfg.linear_end) < 1e-9
