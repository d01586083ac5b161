"""Calibrate the memory estimate (src/ccsr/models/ccsr_v1/memory.py) against measured peaks.

For the tiny and the full-size architecture (random weights, fp32, CPU) it
measures the peak memory each stage adds (UNet + ControlNet call, VAE encoder,
VAE decoder, tiled VAE) at a few sizes and compares it with the estimate. The
estimate must be above every measurement (ratio estimate/measured >= 1); the
script prints the ratios and saves them as JSON under benchmarks/results/.

    python benchmarks/bench_memory.py                  # both architectures
    python benchmarks/bench_memory.py --configs tiny   # the quick one

Each architecture runs in its own subprocess with glibc's mmap threshold fixed
(MALLOC_MMAP_THRESHOLD_), so large tensors are returned to the system when
freed and the peak resident set of one case does not hide in the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine  # noqa: E402

# (kind, size, extra): sizes in pixels of the image the stage works at
CASES = {
    "tiny": [("net", 256, 1), ("net", 512, 1), ("net", 256, 4), ("encode", 256, None), ("encode", 512, None),
             ("decode", 256, None), ("decode", 512, None), ("tiled_decode", 512, 16), ("tiled_encode", 512, 128)],
    "v1": [("net", 256, 1), ("decode", 256, None), ("encode", 256, None), ("net", 512, 1), ("decode", 512, None),
           ("tiled_decode", 512, 16)],
}


def estimate(name: str, kind: str, size: int, extra) -> float:
    """The current estimate (src/ccsr/models/ccsr_v1/memory.py) of one case, in bytes."""
    import torch

    from bench_engine import load_config
    from ccsr.models.ccsr_v1 import memory

    cfg, dt = load_config(name), torch.float32
    if kind == "net":
        return memory.net_bytes(cfg, extra * (size // 8) ** 2, dt)
    if kind in ("encode", "decode"):
        return memory.vae_bytes(cfg, size * size, dt, memory.K_ENC if kind == "encode" else memory.K_DEC)
    if kind == "tiled_decode":
        return memory.tiled_vae_bytes(cfg, size, size, extra * 8, memory.DECODER_PAD * 8, dt, memory.K_DEC, False)
    return memory.tiled_vae_bytes(cfg, size, size, extra, memory.ENCODER_PAD, dt, memory.K_ENC, False)


def reestimate(rows: list[dict]) -> list[dict]:
    """Estimates and ratios of measured rows recomputed with the current coefficients."""
    for r in rows:
        if "measured_mb" in r:
            r["estimate_mb"] = estimate(r["config"], r["kind"], r["size_px"], r["extra"]) / 2**20
            r["ratio"] = r["estimate_mb"] / max(r["measured_mb"], 1e-9)
    return rows


def run_config(name: str, out_file: Path) -> list[dict]:
    import torch

    from bench_engine import checkpoint, load_config
    from ccsr.models.ccsr_v1.networks.model import CCSRModel
    from ccsr.engine import tiled_vae
    from ccsr.models.ccsr_v1 import memory

    torch.manual_seed(0)
    cfg = load_config(name)
    model = CCSRModel.from_file(checkpoint(name, "fp32"), cfg)
    # An fp32 model from an fp32 file shares the file's memory-mapped pages: copy them into
    # process memory, or pages the system evicted between cases count as the case's peak.
    for t in list(model.parameters()) + list(model.buffers()):
        t.data = t.data.clone()
    dev = torch.device("cpu")
    out = []
    for kind, size, extra in CASES[name]:
        lat = size // 8
        if kind == "net":
            x = torch.randn(extra, 4, lat, lat)
            fn = lambda: model.eps(x, torch.tensor(500), x)  # noqa: E731
        elif kind == "encode":
            x = torch.rand(1, 3, size, size)
            fn = lambda: model.encode_condition(x)  # noqa: E731
        elif kind == "decode":
            z = torch.randn(1, 4, lat, lat)
            fn = lambda: model.decode(z)  # noqa: E731
        elif kind == "tiled_decode":
            z = torch.randn(1, 4, lat, lat)
            fn = lambda: tiled_vae.tiled_decode(model.vae, z, tile_size=extra, pad=memory.DECODER_PAD)  # noqa: E731
        else:
            x = torch.rand(1, 3, size, size) * 2 - 1
            fn = lambda: tiled_vae.tiled_encode(model.vae, x, tile_size=extra, pad=memory.ENCODER_PAD)  # noqa: E731
        est = estimate(name, kind, size, extra)
        fn()  # warm-up: one-time allocations (kernels, caches) are not the request's
        t0 = time.perf_counter()
        _, peak = memory.measure_peak(fn, dev)
        row = {"config": name, "kind": kind, "size_px": size, "extra": extra, "measured_mb": peak / 2**20,
               "estimate_mb": est / 2**20, "ratio": est / max(peak, 1), "seconds": time.perf_counter() - t0}
        print(f"  {name:4} {kind:12} {size:4} px {str(extra):4}: measured {row['measured_mb']:8.1f} MB, "
              f"estimate {row['estimate_mb']:8.1f} MB, ratio {row['ratio']:.2f}", flush=True)
        out.append(row)
        out_file.write_text(json.dumps(out))  # what is measured survives a run cut short
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=["tiny", "v1"])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--reestimate", nargs="*", type=Path, default=None,
                    help="recompute the estimates of these result files' measurements with the current coefficients "
                         "(after changing them) and save the merged result as --out")
    ap.add_argument("--out", type=Path, default=RESULTS / "memory-calibration-cpu.json")
    args = ap.parse_args()
    if args.one:
        name, out_file = args.one.split(",", 1)
        run_config(name, Path(out_file))
        return
    if args.reestimate is not None:
        old = [json.loads(f.read_text()) for f in args.reestimate]
        rows = reestimate([r for report in old for r in report["results"]])
        ratios = [r["ratio"] for r in rows if "ratio" in r]
        report = {"machine": old[0]["machine"], "when": [o["when"] for o in old], "load_average": [o["load_average"] for o in old],
                  "note": "measurements as run; estimates recomputed with the coefficients of this commit (--reestimate)",
                  "min_ratio_estimate_over_measured": min(ratios), "results": rows}
        args.out.write_text(json.dumps(report, indent=2))
        for r in (r for r in rows if "ratio" in r):
            print(f"  {r['config']:4} {r['kind']:12} {r['size_px']:4} px: measured {r['measured_mb']:8.1f} MB, "
                  f"estimate {r['estimate_mb']:8.1f} MB, ratio {r['ratio']:.2f}")
        print(f"smallest estimate/measured ratio: {min(ratios):.2f}; saved {args.out}")
        return
    load = os.getloadavg()
    rows = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    for name in args.configs:
        print(f"== {name}", flush=True)
        part = args.out.with_suffix(f".{name}.part")
        part.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--one", f"{name},{part}"], env=env)
        if part.exists():
            rows.extend(json.loads(part.read_text()))
            part.unlink()
        if proc.returncode:
            rows.append({"config": name, "error": f"exit {proc.returncode}"})
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    report = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_average": load,
              "min_ratio_estimate_over_measured": min(ratios) if ratios else None, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"smallest estimate/measured ratio: {report['min_ratio_estimate_over_measured']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
