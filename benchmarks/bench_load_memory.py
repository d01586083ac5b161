"""Peak memory of loading a full-size (v1) checkpoint, per file format and dtype.

Writes random full-size checkpoints once (benchmarks/.cache/, ~3.4 GB fp16 and
~6.9 GB fp32) and loads each in a fresh subprocess, reporting the process's
peak RSS next to the file size. The point: loading must not need much more
than the file's size (memory-mapped reads, one tensor converted at a time).

    python benchmarks/bench_load_memory.py [--formats fp16 fp32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
OUT = ROOT / "benchmarks" / "results" / "load-memory-cpu.json"


def load_once(path: str, dtype: str) -> dict:
    import torch

    from ccsr.models.ccsr_v1.networks.model import CCSRModel
    from ccsr.engine.device import DTYPES

    t0 = time.perf_counter()
    model = CCSRModel.from_file(path, None, device="cpu", dtype=DTYPES[dtype])
    secs = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Weights of a matching dtype stay memory-mapped and are paged in on first
    # use: touch every network once (tiny inputs) so the peak counts them all.
    with torch.no_grad():
        x = torch.zeros(1, 3, 64, 64)
        c = model.encode_condition(x)
        model.eps(c, torch.tensor([999]), c)
        model.decode(c)
    return {"load_s": secs, "params": params, "peak_rss_after_load_mb": after_load,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", nargs="*", default=["fp16"], help="file dtypes to test: fp16 (3.4 GB), fp32 (6.9 GB)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(load_once(*args.one)))
        return
    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint
    from ccsr.engine.device import DTYPES

    results = []
    for fmt in args.formats:
        path = CACHE / f"random-v1-{fmt}.safetensors"
        if not path.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            print(f"writing {path} ...", flush=True)
            write_random_checkpoint(CCSRConfig.v1(), path, dtype=DTYPES[fmt])
        for model_dtype in (fmt,):
            proc = subprocess.run([sys.executable, __file__, "--one", str(path), model_dtype], capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                continue
            r = json.loads(line[7:]) | {"file": path.name, "file_mb": path.stat().st_size / 2**20, "model_dtype": model_dtype}
            r["peak_rss_over_file"] = r["peak_rss_mb"] / r["file_mb"]
            results.append(r)
            print(f"{path.name} -> {model_dtype} model: {r['params'] / 1e9:.3f} G params, load {r['load_s']:.1f}s, "
                  f"peak RSS {r['peak_rss_after_load_mb']:.0f} MB after load, {r['peak_rss_mb']:.0f} MB after touching every network, for a {r['file_mb']:.0f} MB file ({r['peak_rss_over_file']:.2f}x)", flush=True)
    from machine_info import machine

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": results}, indent=2))
    print(f"saved {OUT}")


if __name__ == "__main__":
    main()
