"""Process-level settings of a CPU request, each against its own off switch.

Whole ``ccsr upscale`` processes on the full-size random CCSR-v2 weights
(one-step, 256 -> 512, fp32), alternating on and off in each round so that
load from other processes hits both alike; medians, ratios, peak RSS, system
time and minor page faults are printed and saved in ``benchmarks/results/``.

- ``huge_pages``: the default, against ``CCSR_HUGE_PAGES=0`` (PyTorch's
  allocator then uses 4 KiB pages; ``src/ccsr/engine/allocator.py``).
- ``exit_now``: the ``ccsr`` entry point, which ends the process without the
  interpreter's teardown once upscale has run a model, against the same
  command run through the Typer app alone (a normal interpreter exit;
  ``src/ccsr/cli.py``).
- ``cpu_kernels``: the default kernel choices (``auto``: by the CPU's vendor,
  ``src/ccsr/engine/cpu_kernels.py``) against the choices before them
  (``CCSR_FUSED_UPSAMPLE=on CCSR_ONEDNN_LINEAR=off``: what ``auto`` gives on
  Intel); the VAE's in-place SiLU and Winograd's channel rule stay on both.

``--cases`` runs a subset (``default`` always runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_v2 import CACHE, RESULTS, timed, v2_full_weights  # noqa: E402
from machine_info import machine  # noqa: E402

#: Runs the Typer app without the entry point's early exit.
PLAIN = "import sys; from ccsr.cli import app; sys.argv[0] = 'ccsr'; app()"


def summary(runs: list[dict]) -> dict:
    return {"runs": runs, **{f"median_{k}": statistics.median(r[k] for r in runs)
                             for k in ("wall_s", "peak_rss_bytes", "sys_s", "minflt")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "process-cpu.json")
    ap.add_argument("--cases", nargs="+", choices=("huge_pages_off", "normal_exit", "cpu_kernels_before"),
                    default=["huge_pages_off", "normal_exit"])
    args = ap.parse_args()
    weights = v2_full_weights()
    from PIL import Image

    image = CACHE / "v2-input-256.png"
    Image.open(ROOT / "tests" / "fixtures" / "images" / "chelsea.png").convert("RGB").resize((256, 256), Image.BICUBIC).save(image)
    flags = ["upscale", str(image), "-o", str(CACHE / "process.png"), "--model", "ccsr-v2", "--weights", str(weights),
             "--device", "cpu", "--dtype", "fp32", "--scale", "2", "--seed", "1"]
    base = {k: v for k, v in os.environ.items()
            if k not in ("THP_MEM_ALLOC_ENABLE", "CCSR_HUGE_PAGES", "CCSR_FUSED_UPSAMPLE", "CCSR_ONEDNN_LINEAR")}
    every = {
        "default": ([sys.executable, "-m", "ccsr.cli", *flags], {}),
        "huge_pages_off": ([sys.executable, "-m", "ccsr.cli", *flags], {"CCSR_HUGE_PAGES": "0"}),
        "normal_exit": ([sys.executable, "-c", PLAIN, *flags], {}),
        "cpu_kernels_before": ([sys.executable, "-m", "ccsr.cli", *flags],
                               {"CCSR_FUSED_UPSAMPLE": "on", "CCSR_ONEDNN_LINEAR": "off"}),
    }
    cases = {k: v for k, v in every.items() if k == "default" or k in args.cases}
    runs: dict[str, list] = {k: [] for k in cases}
    for i in range(args.rounds):
        for name, (cmd, env) in cases.items():
            runs[name].append(timed(cmd, env, base_env=base))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]['wall_s']:.2f} s" for k, v in runs.items()), flush=True)
    s = {k: summary(v) for k, v in runs.items()}
    d = s["default"]
    result = {"machine": machine(), "request": "ccsr-v2 one-step 256 -> 512, fp32, full-size random weights",
              "cases": s}
    if "huge_pages_off" in s:
        off = s["huge_pages_off"]
        result.update(huge_pages_wall_ratio=d["median_wall_s"] / off["median_wall_s"],
                      huge_pages_sys_ratio=d["median_sys_s"] / off["median_sys_s"],
                      huge_pages_fault_ratio=d["median_minflt"] / off["median_minflt"])
    if "normal_exit" in s:
        result["exit_now_saved_s"] = s["normal_exit"]["median_wall_s"] - d["median_wall_s"]
    if "cpu_kernels_before" in s:
        result["cpu_kernels_wall_ratio"] = d["median_wall_s"] / s["cpu_kernels_before"]["median_wall_s"]
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("huge", "exit", "cpu_kernels"))}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
