"""How close one request's fp32 arithmetic runs to this CPU's own limit.

Issue 9 asks for the full-size 256 -> 512 request at half the official code's
whole-process wall time on a 2-core CPU. Both sides do the same fp32
arithmetic (17 UNet + ControlNet evaluations, one VAE encode, one decode), so
the question is whether that arithmetic can run fast enough at all. This
script answers it on the machine it runs on:

1. counts the floating-point operations of each stage of the request
   (``torch.utils.flop_counter``: convolutions, matrix products, attention);
2. times each stage in this process (median of ``--repeats``) and the one
   network evaluation by operator class (convolution, linear, attention,
   the rest) with the torch profiler;
3. measures the CPU's fp32 rates: a large matrix product (the ceiling for
   linear layers and attention) and a 3x3 convolution of the UNet's first
   level (oneDNN; it can exceed the matrix rate with Winograd-style kernels);
4. given the official code's whole-process wall time (``--official-wall``,
   from ``bench_vs_official.py`` in the same session), prints the time the
   goal leaves for the arithmetic and the rate it would need.

    python benchmarks/bench_cpu_floor.py --official-wall 190.3
    python benchmarks/bench_cpu_floor.py --arch tiny --size 128   # quick check

Weights are random (the cost depends on the architecture, not the values).
Results: ``benchmarks/results/cpu-floor.json`` (or ``--out``), machine named.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "src"))

from machine_info import machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

#: profiler operator names -> class (everything else is "other": norms, activations, copies)
CLASSES = {
    "convolution": ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d"),
    "linear": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math"),
}


def median_time(fn, repeats: int) -> float:
    fn()  # warm: oneDNN picks and caches its kernels on the first call of each shape
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_rates(repeats: int) -> dict:
    """fp32 GFLOP/s of a 4096^2 matrix product and of a 320-channel 3x3 convolution at 64x64."""
    import torch
    import torch.nn.functional as F

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    t_mm = median_time(lambda: a @ b, repeats)
    x, w = torch.randn(1, 320, 64, 64), torch.randn(320, 320, 3, 3)
    t_conv = median_time(lambda: F.conv2d(x, w, padding=1), repeats)
    return {"matmul_4096_gflops": 2 * 4096**3 / t_mm / 1e9,
            "conv3x3_320ch_64px_gflops": 2 * 320 * 320 * 9 * 64 * 64 / t_conv / 1e9}


def count_flops(fn) -> dict:
    """Total FLOPs of one call of ``fn`` and their split by operator class."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(q, k, v, *args, out_shape=None, **kwargs) -> int:  # shapes, not tensors
        return sdpa_flop_count(q, k, v)

    # torch's counter has no formula for the CPU flash-attention kernel: the two products, counted as SDPA's
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        fn()
    by_class = {k: 0 for k in (*CLASSES, "other")}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op)
        cls = ("convolution" if "convolution" in name else "attention" if "scaled_dot_product" in name
               else "linear" if any(k in name for k in ("addmm", ".mm", "bmm", "baddbmm")) else "other")
        by_class[cls] += int(flops)
    return {"total": counter.get_total_flops(), "by_class": by_class}


def profile_classes(fn) -> dict:
    """Self CPU seconds of one call of ``fn`` by operator class."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    seconds = {k: 0.0 for k in (*CLASSES, "other")}
    for ev in prof.key_averages():
        cls = next((k for k, names in CLASSES.items() if ev.key in names), "other")
        seconds[cls] += ev.self_cpu_time_total / 1e6
    return seconds


def run(arch: str, size: int, steps_evals: int, repeats: int, official_wall: float | None, load_s: float | None) -> dict:
    import torch

    from ccsr.model.ccsr_model import CCSRModel
    from ccsr.model.config import CCSRConfig
    from ccsr.model.random import random_state_dict
    from ccsr.pipeline import allocator

    allocator.keep_freed_memory()  # as the engine does on a CPU (pipeline/allocator.py)
    torch.manual_seed(0)
    cfg = CCSRConfig.v1() if arch == "v1" else CCSRConfig.from_yaml(FIXTURES / "ccsr-tiny.yaml")
    model = CCSRModel.from_state_dict(random_state_dict(cfg, seed=0), cfg)
    lat = size // 8
    img = torch.rand(1, 3, size, size)
    x, cond, t = torch.randn(1, 4, lat, lat), torch.randn(1, 4, lat, lat), torch.tensor(500)
    stages = {
        "encode": (lambda: model.encode_condition(img), 1),
        "evaluation": (lambda: model.eps(x, t, cond), steps_evals),
        "decode": (lambda: model.decode(x), 1),
    }
    out: dict = {"architecture": arch, "diffusion_px": size, "network_evaluations": steps_evals,
                 "torch_threads": torch.get_num_threads(), "rates": cpu_rates(repeats), "stages": {}}
    for name, (fn, calls) in stages.items():
        flops = count_flops(fn)
        sec = median_time(fn, repeats)
        out["stages"][name] = {"calls": calls, "tflop_per_call": flops["total"] / 1e12,
                               "tflop_by_class": {k: v / 1e12 for k, v in flops["by_class"].items()},
                               "median_s_per_call": sec, "gflops": flops["total"] / sec / 1e9}
    ev = out["stages"]["evaluation"]
    prof = profile_classes(stages["evaluation"][0])
    ev["profile_s_by_class"] = prof
    ev["gflops_by_class"] = {k: ev["tflop_by_class"][k] * 1e3 / prof[k] for k in CLASSES if prof[k] > 0}
    total_tflop = sum(s["tflop_per_call"] * s["calls"] for s in out["stages"].values())
    arith_s = sum(s["median_s_per_call"] * s["calls"] for s in out["stages"].values())
    # The least time this arithmetic can take here: convolutions at the convolution rate, the rest at the matmul rate.
    rates = out["rates"]
    floor_s = sum(
        s["calls"] * tf * 1e3 / (rates["conv3x3_320ch_64px_gflops"] if k == "convolution" else rates["matmul_4096_gflops"])
        for s in out["stages"].values() for k, tf in s["tflop_by_class"].items()
    )
    out["request"] = {"tflop": total_tflop, "arithmetic_s": arith_s, "gflops": total_tflop * 1e3 / arith_s,
                      "floor_at_measured_rates_s": floor_s}
    if official_wall:
        budget = 0.5 * official_wall - (load_s or 0.0)
        out["goal_half_official"] = {
            "official_wall_s": official_wall, "ours_load_and_rest_s": load_s, "arithmetic_budget_s": budget,
            "needed_gflops": total_tflop * 1e3 / budget if budget > 0 else None,
            "needed_vs_matmul_rate": (total_tflop * 1e3 / budget) / out["rates"]["matmul_4096_gflops"] if budget > 0 else None,
            "floor_fits_budget": floor_s <= budget,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["v1", "tiny"], default="v1")
    ap.add_argument("--size", type=int, default=512, help="diffusion resolution in px (the 256 -> 512 request: 512)")
    ap.add_argument("--evaluations", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--official-wall", type=float, help="the official code's whole-process wall seconds, same machine")
    ap.add_argument("--load-s", type=float, help="our whole-process seconds outside the arithmetic (imports, load, files)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu-floor.json")
    a = ap.parse_args()
    res = run(a.arch, a.size, a.evaluations, a.repeats, a.official_wall, a.load_s)
    res = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **res}
    r = res["rates"]
    print(f"fp32 rates: matmul {r['matmul_4096_gflops']:.0f} GFLOP/s, 3x3 conv {r['conv3x3_320ch_64px_gflops']:.0f} GFLOP/s")
    for name, s in res["stages"].items():
        print(f"{name:10s} x{s['calls']:<2d} {s['tflop_per_call']:.3f} TFLOP, {s['median_s_per_call']:.2f} s/call, "
              f"{s['gflops']:.0f} GFLOP/s")
    ev = res["stages"]["evaluation"]
    for k, g in ev["gflops_by_class"].items():
        print(f"  {k:11s} {ev['tflop_by_class'][k]:.3f} TFLOP in {ev['profile_s_by_class'][k]:.2f} s: {g:.0f} GFLOP/s")
    print(f"  other       {ev['profile_s_by_class']['other']:.2f} s")
    q = res["request"]
    print(f"request: {q['tflop']:.2f} TFLOP in {q['arithmetic_s']:.1f} s ({q['gflops']:.0f} GFLOP/s); "
          f"at the measured rates, no less than {q['floor_at_measured_rates_s']:.1f} s")
    if "goal_half_official" in res:
        g = res["goal_half_official"]
        need = f"{g['needed_gflops']:.0f} GFLOP/s, {g['needed_vs_matmul_rate']:.2f}x the matmul rate" if g["needed_gflops"] else "impossible"
        print(f"goal 0.5 x {g['official_wall_s']:.1f} s: {g['arithmetic_budget_s']:.1f} s for the arithmetic -> needs {need}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
