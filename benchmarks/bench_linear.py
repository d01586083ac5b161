"""Linear layers: MKL's ``F.linear`` against oneDNN's (``ccsr.engine.linear``).

Every ``nn.Linear`` call of one full-size CCSR-v2 two-step request's networks
(random weights from ``benchmarks/.cache/v2-full-random``, written by
``bench_v2.py``): the text encoder on one prompt, and the UNet with its
ControlNet on a 64 px latent at batch 2 (the guided pass), recorded once by
hooks, then each distinct (input shape, weight) timed both ways (fp32, a warm
process, medians of ``--repeats``) and weighted by how often the request
calls it. Saved in ``benchmarks/results/`` with the machine named.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cpu_floor import median_time  # noqa: E402
from machine_info import machine  # noqa: E402

from ccsr.engine import linear  # noqa: E402
from ccsr.engine.device import cpu_vendor  # noqa: E402


def record(nets) -> dict[str, Counter]:
    """Per network, how often each (input shape, in, out, bias) linear is called."""
    calls: dict[str, Counter] = {}
    hooks = []
    for name, net in (("text", nets.text_encoder), ("unet", nets.unet), ("controlnet", nets.controlnet)):
        calls[name] = Counter()
        for m in net.modules():
            if isinstance(m, nn.Linear):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, c=calls[name]: c.update(
                        [(tuple(inp[0].shape), mod.in_features, mod.out_features, mod.bias is not None)])))
    with torch.no_grad():
        ctx = nets.encode_text("clean, high-resolution, 8k").expand(2, -1, -1)
        x = torch.randn(2, 4, 64, 64)
        nets.eps(x, 500, ctx, torch.randn(2, 4, 64, 64))
    for h in hooks:
        h.remove()
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--weights", type=Path, default=ROOT / "benchmarks" / ".cache" / "v2-full-random")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "linear-cpu.json")
    args = ap.parse_args()
    if not linear.available():
        raise SystemExit("this PyTorch build has no oneDNN linear op")
    from ccsr.models.ccsr_v2.networks import V2Networks

    nets = V2Networks.from_folder(args.weights, torch.device("cpu"), torch.float32)
    calls = record(nets)
    del nets
    totals = {}
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for name, counter in calls.items():
            mkl = onednn = 0.0
            for (shape, fan_in, fan_out, bias), n in counter.items():
                x, w = torch.randn(shape), torch.randn(fan_out, fan_in) * fan_in**-0.5
                b = torch.randn(fan_out) if bias else None
                a = median_time(lambda: F.linear(x, w, b), args.repeats)
                o = median_time(lambda: linear.linear(x, w, b), args.repeats)
                diff = ((linear.linear(x, w, b) - F.linear(x, w, b)).abs().max() / F.linear(x, w, b).abs().max()).item()
                rows.append({"net": name, "input": list(shape), "out": fan_out, "calls": n, "mkl_s": a,
                             "onednn_s": o, "ratio": o / a, "max_rel_diff": diff})
                mkl, onednn = mkl + n * a, onednn + n * o
            totals[name] = {"mkl_s": mkl, "onednn_s": onednn, "ratio": onednn / mkl}
            print(f"{name}: {len(counter)} shapes, {sum(counter.values())} calls: oneDNN {onednn:.3f} s, "
                  f"MKL {mkl:.3f} s ({onednn / mkl:.2f}x)", flush=True)
    all_mkl = sum(t["mkl_s"] for t in totals.values())
    all_onednn = sum(t["onednn_s"] for t in totals.values())
    totals["all"] = {"mkl_s": all_mkl, "onednn_s": all_onednn, "ratio": all_onednn / all_mkl}
    print(f"all: oneDNN {all_onednn:.3f} s, MKL {all_mkl:.3f} s ({all_onednn / all_mkl:.2f}x)")
    result = {"machine": machine(), "vendor": cpu_vendor(), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "totals": totals, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
