"""benchmarks/bench_cpu_floor.py works end to end on the tiny model: every stage
counted and timed, the evaluation split by operator class, the goal's budget computed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_floor_report(tmp_path):
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cpu_floor.py"), "--arch", "tiny", "--size", "128",
         "--evaluations", "3", "--repeats", "1", "--official-wall", "10", "--load-s", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "cpu" in res["machine"] and res["rates"]["matmul_4096_gflops"] > 0
    stages = res["stages"]
    assert set(stages) == {"encode", "evaluation", "decode"} and stages["evaluation"]["calls"] == 3
    for s in stages.values():
        assert s["tflop_per_call"] > 0 and s["median_s_per_call"] > 0
        # the classes add up to the counter's total
        assert abs(sum(s["tflop_by_class"].values()) - s["tflop_per_call"]) < 1e-9
    ev = stages["evaluation"]
    # the UNet and ControlNet are convolutions, linear layers and attention: each counted and timed
    assert {"convolution", "linear", "attention"} <= set(ev["gflops_by_class"])
    q = res["request"]
    assert abs(q["tflop"] - sum(s["tflop_per_call"] * s["calls"] for s in stages.values())) < 1e-9
    assert 0 < q["floor_at_measured_rates_s"] and isinstance(res["goal_vs_official"]["floor_fits_budget"], bool)
    g = res["goal_vs_official"]
    assert g["fraction"] == 0.5 and g["arithmetic_budget_s"] == 4.0 and g["needed_gflops"] > 0
    assert "goal 0.5 x 10.0 s" in proc.stdout


def test_tiled_floor_report(tmp_path):
    """The tiled request: tiles batched as the engine batches them (3 tiles two at a
    time: one call of 2 and one of 1 per evaluation), the VAE on the whole image."""
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cpu_floor.py"), "--arch", "tiny", "--size", "128",
         "--tile-px", "64", "--tiles", "3", "--tile-batch", "2", "--evaluations", "2", "--repeats", "1",
         "--goal", "0.25", "--official-wall", "40", "--load-s", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    stages = res["stages"]
    assert set(stages) == {"encode", "evaluation", "evaluation_1_tiles", "decode"}
    assert stages["evaluation"]["calls"] == 2 and stages["evaluation_1_tiles"]["calls"] == 2
    # a call of two tiles is twice the arithmetic of a call of one
    two, one = stages["evaluation"]["tflop_per_call"], stages["evaluation_1_tiles"]["tflop_per_call"]
    assert abs(two - 2 * one) < 1e-6 * two
    assert res["tiles"] == {"tile_px": 64, "tiles": 3, "tile_batch": 2}
    g = res["goal_vs_official"]
    assert g["fraction"] == 0.25 and g["arithmetic_budget_s"] == 8.0
    assert "goal 0.25 x 40.0 s" in proc.stdout and "budget" in proc.stdout
