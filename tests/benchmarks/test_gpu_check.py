"""benchmarks/gpu_check.py works end to end: its --cpu-smoke mode (tiny model, tiny sizes,
on the CPU) writes a JSON with every section measured, so the GPU run is known to work."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_smoke_run_has_every_section(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and "cpu" in report["machine"]
    s = report["sections"]
    assert set(s) == {"correctness", "fp16_psnr", "noise", "speed", "official", "memory", "throughput"}
    errors = {k: v["error"] for k, v in s.items() if "error" in v}
    assert not errors, errors
    assert s["correctness"]["all_finite"] is True
    assert s["fp16_psnr"]["tiny"]["psnr_fp16_vs_fp32_db"] > 20
    assert s["noise"]["equal"] is True
    assert {"fp32-eager", "fp32-compiled-default"} <= set(s["speed"])
    for v in (v for k, v in s["speed"].items() if k != "section_seconds"):
        assert {"condition_encode", "sampling", "decode", "model"} <= set(v["median_s"])
    assert "skipped" in s["official"]  # no official checkout in the tests
    cases = [v for k, v in s["memory"].items() if k != "section_seconds"]
    assert cases and all(c["plan"]["fits"] and c["peak_activation_gib"] > 0 for c in cases)
    assert all(math.isfinite(s["throughput"][f"{n}-queued"]["requests_per_s"]) for n in (1, 2, 4))
