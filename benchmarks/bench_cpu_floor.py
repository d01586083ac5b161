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

The tiled request (issue 9's 9-tile case, goal 0.25 x): the network runs on
tiles, as many per call as the engine's ``tile_batch_size`` (4: calls of 4, 4
and 1 tile per evaluation), while the VAE still sees the whole image:

    python benchmarks/bench_cpu_floor.py --tile-px 256 --tiles 9 --evaluations 7 \
        --goal 0.25 --official-wall 319.1 --load-s 14.4

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


def conv_rate(channels: int, side: int, repeats: int) -> float:
    """fp32 GFLOP/s of one 3x3 convolution, ``channels`` in and out, on a ``side`` px map."""
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(1, channels, side, side), torch.randn(channels, channels, 3, 3)
    return 2 * channels * channels * 9 * side * side / median_time(lambda: F.conv2d(x, w, padding=1), repeats) / 1e9


def cpu_rates(repeats: int, vae_shapes: bool = False) -> dict:
    """fp32 GFLOP/s of a 4096^2 matrix product and of a 320-channel 3x3 convolution at 64x64
    (the UNet's first level); with ``vae_shapes`` also the VAE's 3x3 convolutions at
    512 px (128 channels, 512 px), 256 and 512 channels (256 and 128 px)."""
    import torch

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    t_mm = median_time(lambda: a @ b, repeats)
    rates = {"matmul_4096_gflops": 2 * 4096**3 / t_mm / 1e9, "conv3x3_320ch_64px_gflops": conv_rate(320, 64, repeats)}
    if vae_shapes:
        for ch, side in ((128, 512), (256, 256), (512, 128)):
            rates[f"conv3x3_{ch}ch_{side}px_gflops"] = conv_rate(ch, side, repeats)
    return rates


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


def tile_calls(tiles: int, tile_batch: int) -> dict[int, int]:
    """Network calls per evaluation by batch size: 9 tiles 4 at a time -> {4: 2, 1: 1}."""
    calls: dict[int, int] = {}
    for start in range(0, tiles, tile_batch):
        n = min(tile_batch, tiles - start)
        calls[n] = calls.get(n, 0) + 1
    return calls


def run(arch: str, size: int, steps_evals: int, repeats: int, official_wall: float | None, load_s: float | None,
        *, tile_px: int | None = None, tiles: int = 1, tile_batch: int = 4, goal: float = 0.5) -> dict:
    import torch

    from ccsr.models.ccsr_v1.networks.model import CCSRModel
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import random_state_dict
    from ccsr.engine import allocator

    allocator.keep_freed_memory()  # as the engine does on a CPU (engine/allocator.py)
    torch.manual_seed(0)
    cfg = CCSRConfig.v1() if arch == "v1" else CCSRConfig.from_yaml(FIXTURES / "ccsr-tiny.yaml")
    model = CCSRModel.from_state_dict(random_state_dict(cfg, seed=0), cfg)
    lat = size // 8
    img = torch.rand(1, 3, size, size)
    x, t = torch.randn(1, 4, lat, lat), torch.tensor(500)

    def evaluation(batch: int, side: int):
        xb, cb = torch.randn(batch, 4, side, side), torch.randn(batch, 4, side, side)
        return lambda: model.eps(xb, t, cb)

    stages = {"encode": (lambda: model.encode_condition(img), 1)}
    if tile_px:  # per evaluation: full batches of tiles, then the rest
        for i, (batch, n) in enumerate(sorted(tile_calls(tiles, tile_batch).items(), reverse=True)):
            stages["evaluation" if i == 0 else f"evaluation_{batch}_tiles"] = (evaluation(batch, tile_px // 8), steps_evals * n)
    else:
        stages["evaluation"] = (evaluation(1, lat), steps_evals)
    stages["decode"] = (lambda: model.decode(x), 1)
    out: dict = {"architecture": arch, "diffusion_px": size, "network_evaluations": steps_evals,
                 "tiles": {"tile_px": tile_px, "tiles": tiles, "tile_batch": tile_batch} if tile_px else None,
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
        budget = goal * official_wall - (load_s or 0.0)
        out["goal_vs_official"] = {
            "fraction": goal, "official_wall_s": official_wall, "ours_load_and_rest_s": load_s, "arithmetic_budget_s": budget,
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
    ap.add_argument("--tile-px", type=int, help="tiled diffusion: tile size in px (the 9-tile request: 256)")
    ap.add_argument("--tiles", type=int, default=9, help="tiles per evaluation (with --tile-px)")
    ap.add_argument("--tile-batch", type=int, default=4, help="tiles per network call: the engine's tile_batch_size")
    ap.add_argument("--goal", type=float, default=0.5, help="goal as a fraction of the official wall time")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu-floor.json")
    a = ap.parse_args()
    res = run(a.arch, a.size, a.evaluations, a.repeats, a.official_wall, a.load_s,
              tile_px=a.tile_px, tiles=a.tiles if a.tile_px else 1, tile_batch=a.tile_batch, goal=a.goal)
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
    if "goal_vs_official" in res:
        g = res["goal_vs_official"]
        need = f"{g['needed_gflops']:.0f} GFLOP/s, {g['needed_vs_matmul_rate']:.2f}x the matmul rate" if g["needed_gflops"] else "impossible"
        print(f"goal {g['fraction']} x {g['official_wall_s']:.1f} s: {g['arithmetic_budget_s']:.1f} s for the arithmetic -> needs {need}")
        print(f"floor {q['floor_at_measured_rates_s']:.1f} s {'fits' if g['floor_fits_budget'] else 'does not fit'} "
              f"the {g['arithmetic_budget_s']:.1f} s budget")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
