"""How far CCSR-v2's CPU speed goals are from this CPU's fp32 arithmetic limit.

Issue 22 asks, on a 2-core CPU in whole processes: the two-step request
256 -> 512 at no more than 0.6 x the official code's wall time, and the
one-step request 5 x faster than our v1 default request on the same input.
Both sides of each comparison share most of their arithmetic (the VAE
encoder and decoder at 512 px; the same UNet and ControlNet), so the question
is whether the arithmetic left after imports and loading can run fast enough
at all. This script answers it on the machine it runs on, as
``bench_cpu_floor.py`` does for v1:

1. counts the floating-point operations of each stage of a v2 request
   (text encoder, VAE encoder, one network pass for one image, the guided
   pass for two, VAE decoder) with ``torch.utils.flop_counter``;
2. times each stage in this process (median of ``--repeats``; weights stay
   resident here, so no page faults are counted);
3. measures this CPU's fp32 rates: a large matrix product and 3x3
   convolutions at the UNet's and the VAE's shapes (oneDNN);
4. prints each request's arithmetic time, its floor at the best measured
   convolution rate, and, given the whole-process figures of
   ``bench_v2.py`` from the same session (``--official-wall``, ``--v1-wall``,
   ``--startup-s``), the time each goal leaves for the arithmetic and the
   rate it would need.

    python benchmarks/bench_v2_floor.py --official-wall 48.4 --v1-wall 107.4 --startup-s 4.5

Weights: the full-size random folder ``bench_v2.py`` writes
(``benchmarks/.cache/v2-full-random``; made here when missing). Results:
``benchmarks/results/v2-floor-cpu.json`` (or ``--out``), machine named.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))

from bench_cpu_floor import count_flops, cpu_rates, median_time  # noqa: E402
from bench_v2 import v2_full_weights  # noqa: E402
from machine_info import machine  # noqa: E402

#: Stage calls per request: the one-step recipe (default) and the two-step one
#: (steps 6, t_min 0.5, guidance 4.5: a first pass for one image, then a guided pass for two).
REQUESTS = {
    "one_step": {"text": 1, "encode": 1, "pass_1": 1, "decode": 1},
    "two_step": {"text": 2, "encode": 1, "pass_1": 1, "pass_2": 1, "decode": 1},
}


def run(size: int, repeats: int) -> dict:
    import torch

    from ccsr.engine import allocator
    from ccsr.models.ccsr_v2.networks import V2Networks

    allocator.keep_freed_memory()  # as the engine does on a CPU
    nets = V2Networks.from_folder(v2_full_weights(), torch.device("cpu"), torch.float32)
    lat = size // 8
    img = torch.rand(1, 3, size, size)
    ctx = nets.encode_text("clean, high-resolution, 8k")

    def network_pass(batch: int):
        x, cond = torch.randn(batch, 4, lat, lat), torch.randn(batch, 4, lat, lat)
        return lambda: nets.eps(x, 999, ctx.expand(batch, -1, -1), cond)

    z = torch.randn(1, 4, lat, lat)
    stages = {"text": lambda: nets.encode_text("clean, high-resolution, 8k"), "encode": lambda: nets.posterior(img),
              "pass_1": network_pass(1), "pass_2": network_pass(2), "decode": lambda: nets.decode(z)}
    out: dict = {"diffusion_px": size, "torch_threads": torch.get_num_threads(),
                 "rates": cpu_rates(repeats, vae_shapes=True), "stages": {}}
    for name, fn in stages.items():
        flops = count_flops(fn)
        sec = median_time(fn, repeats)
        out["stages"][name] = {"tflop": flops["total"] / 1e12,
                               "tflop_by_class": {k: v / 1e12 for k, v in flops["by_class"].items()},
                               "median_s": sec, "gflops": flops["total"] / sec / 1e9}
    best_conv = max(v for k, v in out["rates"].items() if k.startswith("conv"))
    mm = out["rates"]["matmul_4096_gflops"]
    out["best_conv_gflops"] = best_conv
    for req, calls in REQUESTS.items():
        st = [(out["stages"][s], n) for s, n in calls.items()]
        tflop = sum(s["tflop"] * n for s, n in st)
        arith = sum(s["median_s"] * n for s, n in st)
        # Convolutions at the best convolution rate measured, everything else at the matrix-product rate.
        floor = sum(n * tf * 1e3 / (best_conv if k == "convolution" else mm)
                    for s, n in st for k, tf in s["tflop_by_class"].items())
        out[req] = {"calls": calls, "tflop": tflop, "arithmetic_s": arith, "gflops": tflop * 1e3 / arith,
                    "floor_at_best_rates_s": floor}
    return out


def goal(res: dict, req: str, target_wall: float, startup_s: float, what: str) -> dict:
    q = res[req]
    budget = target_wall - startup_s
    need = q["tflop"] * 1e3 / budget if budget > 0 else None
    return {"goal": what, "target_wall_s": target_wall, "startup_s": startup_s, "arithmetic_budget_s": budget,
            "needed_gflops": need, "needed_vs_best_conv": need / res["best_conv_gflops"] if need else None,
            "floor_fits_budget": q["floor_at_best_rates_s"] <= budget}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="diffusion resolution in px (the 256 -> 512 request: 512)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--official-wall", type=float, help="the official two-step whole-process wall seconds (bench_v2.py)")
    ap.add_argument("--v1-wall", type=float, help="our v1 default request's whole-process wall seconds (bench_v2.py)")
    ap.add_argument("--startup-s", type=float, default=0.0,
                    help="our whole-process seconds outside the arithmetic (imports, loading, files, page faults)")
    ap.add_argument("--out", type=Path, default=RESULTS / "v2-floor-cpu.json")
    a = ap.parse_args()
    res = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **run(a.size, a.repeats)}
    goals = []
    if a.official_wall:
        goals.append(goal(res, "two_step", 0.6 * a.official_wall, a.startup_s, "two-step <= 0.6 x official"))
    if a.v1_wall:
        goals.append(goal(res, "one_step", a.v1_wall / 5, a.startup_s, "one-step >= 5 x faster than v1"))
    res["goals"] = goals
    print("fp32 rates (GFLOP/s): " + ", ".join(f"{k.removesuffix('_gflops')} {v:.0f}" for k, v in res["rates"].items()))
    for name, s in res["stages"].items():
        print(f"{name:7s} {s['tflop']:.3f} TFLOP, {s['median_s']:.2f} s, {s['gflops']:.0f} GFLOP/s")
    for req in REQUESTS:
        q = res[req]
        print(f"{req}: {q['tflop']:.2f} TFLOP, {q['arithmetic_s']:.1f} s here ({q['gflops']:.0f} GFLOP/s); "
              f"no less than {q['floor_at_best_rates_s']:.1f} s at the best rates")
    for g in goals:
        need = (f"{g['needed_gflops']:.0f} GFLOP/s, {g['needed_vs_best_conv']:.2f}x the best convolution rate"
                if g["needed_gflops"] else "impossible")
        print(f"{g['goal']}: wall {g['target_wall_s']:.1f} s - startup {g['startup_s']:.1f} s leaves "
              f"{g['arithmetic_budget_s']:.1f} s -> needs {need}; floor {'fits' if g['floor_fits_budget'] else 'does not fit'}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
