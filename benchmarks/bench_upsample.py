"""Nearest 2x upsample + 3x3 convolution: diffusers' way against four 2x2 convolutions.

The three shapes of the VAE decoder's upsamplers at a 512 px output and the
UNet's largest (640 channels 32 -> 64 latent px) (fp32, one image, a warm process): interpolate then a direct convolution, then
NNPACK's Winograd convolution (the default ``winograd`` setting), against
:func:`ccsr.engine.upsample.upsample_conv3x3`. Medians of ``--repeats``;
the largest relative difference from the direct path is printed too. Saved
in ``benchmarks/results/`` with the machine named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cpu_floor import median_time  # noqa: E402
from machine_info import machine  # noqa: E402

from ccsr.engine import winograd  # noqa: E402
from ccsr.engine.upsample import upsample_conv3x3  # noqa: E402

#: (channels, input side) of the decoder's three upsamplers for a 512 px output,
#: then the UNet's largest (SD 2.1's 640 channels, 32 -> 64 latent px).
SHAPES = ((512, 64), (512, 128), (256, 256), (640, 32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "upsample-cpu.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    nnpack = winograd.available()
    rows = []
    with torch.no_grad():
        for c, side in SHAPES:
            x, w, b = torch.randn(1, c, side, side), torch.randn(c, c, 3, 3) * 0.02, torch.randn(c)

            def direct():
                return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)

            def wino():
                return winograd.conv3x3(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, winograd.STRIPE_BYTES)

            ref = direct()
            diff = ((upsample_conv3x3(x, w, b) - ref).abs().max() / ref.abs().max()).item()
            row = {"channels": c, "input": side, "output": 2 * side, "direct_s": median_time(direct, args.repeats),
                   "winograd_s": median_time(wino, args.repeats) if nnpack else None,
                   "phases_s": median_time(lambda: upsample_conv3x3(x, w, b), args.repeats), "max_rel_diff": diff}
            base = row["winograd_s"] or row["direct_s"]
            row["phases_vs_default"] = row["phases_s"] / base
            rows.append(row)
            print(json.dumps(row), flush=True)
    vae = rows[:3]
    result = {"machine": machine(), "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows,
              "total_default_s": sum(r["winograd_s"] or r["direct_s"] for r in vae),
              "total_phases_s": sum(r["phases_s"] for r in vae)}
    print(f"decoder upsamplers: {result['total_phases_s']:.2f} s against {result['total_default_s']:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
