"""CCSR-v2: ours against the official code, and our one-step v2 against our v1.

Each run is a fresh process, from start to the written PNG, as a user waits
for it (imports, loading, the request, the file); peak memory is the process's
peak RSS (``wait4``). Both sides read the same full-size random weights
(the official layout, written once into ``benchmarks/.cache/``, git-ignored).
Runs alternate so that load from other processes hits both alike; medians and
ratios are printed and saved in ``benchmarks/results/`` with the machine named.

1. Two-step 256 -> 512 (steps 6, t_min 0.5, guidance 4.5): ours (``ccsr
   upscale --model ccsr-v2``) against the official CCSR-v2.0 code driven by
   ``tests/models/ccsr_v2/fidelity/make_goldens.py --one`` (fp32 on the CPU;
   the patches it applies are listed there). Needs the official checkout and
   its virtual environment (tests/models/ccsr_v2/fidelity/README.md):
   ``--official DIR --official-python PYTHON``.
2. One-step v2 against our v1 default request (scale 2, 17 network
   evaluations) on the same 256 px input: v2 at scale 2 (the same output
   size) and at its default scale 4. v1 needs a full-size random checkpoint
   (written into the cache too). With ``--dtypes ... bf16`` also v2's one-step
   request in bf16 (v1's default request stays fp32, its default on a CPU).

Another precision than fp32 (``--dtypes bf16``) reads the folder converted to
it once with ``ccsr weights convert`` (cached too), on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
GOLDENS = ROOT / "tests" / "models" / "ccsr_v2" / "fidelity" / "make_goldens.py"
#: Ours with PyTorch's direct convolutions (the ``winograd`` setting off).
NO_WINOGRAD = {"CCSR_WINOGRAD": "0"}
TWO_STEP = {"steps": 6, "t_max": 0.6667, "t_min": 0.5, "guidance_scale": 4.5, "seed": 1, "scale": 2}

sys.path.insert(0, str(ROOT / "benchmarks"))
from machine_info import machine  # noqa: E402


def v2_full_weights() -> Path:
    """The full-size random CCSR-v2 folder every v2 benchmark reads, written
    into the git-ignored cache the first time one asks for it."""
    path = CACHE / "v2-full-random"
    if not (path / "vae").is_dir():
        subprocess.run([sys.executable, "-m", "ccsr.cli", "weights", "random", "--model", "ccsr-v2", "--arch", "full",
                        "-o", str(path)], check=True)
    return path


def v2_weights_in(dtype: str) -> Path:
    """The full-size random folder in ``dtype``: fp32 as written, another precision
    converted once with ``ccsr weights convert`` (both sides then read the same
    files, and neither converts 6.6 GB on every load)."""
    src = v2_full_weights()
    if dtype == "fp32":
        return src
    path = CACHE / f"v2-full-random-{dtype}"
    if not (path / "vae").is_dir():
        subprocess.run([sys.executable, "-m", "ccsr.cli", "weights", "convert", str(src), "-o", str(path), "--model",
                        "ccsr-v2", "--dtype", dtype], check=True)
    return path


def timed(cmd: list[str], env: dict | None = None, base_env: dict | None = None) -> dict:
    """Wall seconds, peak RSS, system seconds and minor page faults of a whole
    process; ``env`` goes over ``base_env`` (default: this process's environment)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**(os.environ if base_env is None else base_env), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}\n{out[-3000:]}")
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "sys_s": usage.ru_stime, "minflt": usage.ru_minflt}


def ours(weights: Path, image: Path, out: Path, opts: dict, model: str = "ccsr-v2", dtype: str = "fp32") -> list[str]:
    flags = []
    for k, v in opts.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    return [sys.executable, "-m", "ccsr.cli", "upscale", str(image), "-o", str(out), "--model", model,
            "--weights", str(weights), "--device", "cpu", "--dtype", dtype, *flags]


def official(args: argparse.Namespace, weights: Path, image: Path, out: Path, opts: dict, dtype: str = "fp32") -> list[str]:
    return [args.official_python, str(GOLDENS), "--weights", str(weights), "--threads", str(args.threads),
            "--one", str(image), "--out", str(out), "--opts", json.dumps(opts), "--dtype", dtype]


def warm(path: Path) -> None:
    """Read the weights once so both sides find them in the page cache (the first
    timed run would otherwise pay the disk for everyone)."""
    for f in ([path] if path.is_file() else sorted(path.rglob("*"))):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def summary(runs: list[dict]) -> dict:
    return {"runs": runs, "median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "median_peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in runs) / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=os.environ.get("CCSR_OFFICIAL_V2"))
    ap.add_argument("--official-python", default=os.environ.get("CCSR_OFFICIAL_V2_PYTHON"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-v1", action="store_true", help="Only the official comparison.")
    ap.add_argument("--skip-official", action="store_true", help="Only the v2 against v1 comparison.")
    ap.add_argument("--skip-x4", action="store_true", help="Not v2's default x4 request (the slowest case).")
    ap.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="Precisions of the official comparison, both sides alike, each reading the weights converted "
                         "to it (bf16: CPUs with native bf16).")
    ap.add_argument("--also-direct", action="store_true",
                    help="Also run ours with the setting winograd off (PyTorch's direct convolutions), in the same rounds.")
    ap.add_argument("--out", type=Path, default=RESULTS / "v2-cpu.json")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    v2w = v2_full_weights()
    from PIL import Image

    image = CACHE / "v2-input-256.png"
    Image.open(ROOT / "tests" / "fixtures" / "images" / "chelsea.png").convert("RGB").resize((256, 256), Image.BICUBIC).save(image)
    env = {"OMP_NUM_THREADS": str(args.threads)}
    warm(v2w)
    result: dict = {"machine": machine(), "loadavg_before": [round(x, 2) for x in os.getloadavg()], "threads": args.threads, "input": "256x256 (chelsea.png, bicubic)",
                    "weights": "full-size architecture, random fp32 (ccsr weights random --model ccsr-v2 --arch full)"}
    if not args.skip_official:
        if not args.official or not args.official_python:
            raise SystemExit("--official and --official-python (or CCSR_OFFICIAL_V2[_PYTHON]) are needed; or --skip-official")
        for dtype in args.dtypes:
            mine, theirs, direct = [], [], []
            v2w = v2_weights_in(dtype)
            warm(v2w)
            for i in range(args.repeats):
                mine.append(timed(ours(v2w, image, CACHE / f"ours-two-step-{dtype}.png", TWO_STEP, dtype=dtype), env))
                if args.also_direct and dtype == "fp32":
                    direct.append(timed(ours(v2w, image, CACHE / "ours-two-step-direct.png", TWO_STEP), {**env, **NO_WINOGRAD}))
                theirs.append(timed(official(args, v2w, image, CACHE / f"official-two-step-{dtype}.png", TWO_STEP, dtype),
                                    {**env, "OFFICIAL_V2": str(args.official)}))
                print(f"two-step {dtype} run {i + 1}: ours {mine[-1]}, official {theirs[-1]}", flush=True)
            a, b = summary(mine), summary(theirs)
            key = "two_step_256_to_512" + ("" if dtype == "fp32" else f"_{dtype}")
            result[key] = {"request": TWO_STEP, "dtype": dtype, "weights_files": v2w.name, "ours": a, "official": b,
                           "wall_ratio": a["median_wall_s"] / b["median_wall_s"],
                           "peak_ratio": a["median_peak_rss_gib"] / b["median_peak_rss_gib"]}
            if direct:
                d = summary(direct)
                result[key].update(ours_direct_conv=d, direct_wall_ratio=d["median_wall_s"] / b["median_wall_s"],
                                   winograd_vs_direct=a["median_wall_s"] / d["median_wall_s"])
            print(json.dumps({k: v for k, v in result[key].items() if "ratio" in k}), flush=True)
    if not args.skip_v1:
        v2w = v2_full_weights()
        v1w = CACHE / "v1-full-random.safetensors"
        if not v1w.is_file():
            subprocess.run([sys.executable, "-m", "ccsr.cli", "weights", "random", "--arch", "full", "-o", str(v1w)], check=True)
        warm(v1w)
        v1, one2, one4, one2_direct, one2_bf16 = [], [], [], [], []
        for i in range(args.repeats):
            v1.append(timed(ours(v1w, image, CACHE / "v1.png", {"seed": 1}, model="ccsr-v1"), env))
            one2.append(timed(ours(v2w, image, CACHE / "v2-one-x2.png", {"seed": 1, "scale": 2}), env))
            if args.also_direct:
                one2_direct.append(timed(ours(v2w, image, CACHE / "v2-one-x2-direct.png", {"seed": 1, "scale": 2}),
                                         {**env, **NO_WINOGRAD}))
            if "bf16" in args.dtypes:
                one2_bf16.append(timed(ours(v2_weights_in("bf16"), image, CACHE / "v2-one-x2-bf16.png", {"seed": 1, "scale": 2},
                                            dtype="bf16"), env))
            if not args.skip_x4:
                one4.append(timed(ours(v2w, image, CACHE / "v2-one-x4.png", {"seed": 1}), env))
            print(f"v1/v2 run {i + 1}: v1 {v1[-1]}, v2 x2 {one2[-1]}" + (f", v2 x4 {one4[-1]}" if one4 else ""), flush=True)
        a, b = summary(v1), summary(one2)
        result["one_step_vs_v1"] = {"v1_default_scale2": a, "v2_one_step_scale2": b,
                                    "speedup_same_output": a["median_wall_s"] / b["median_wall_s"]}
        if one2_direct:
            d = summary(one2_direct)
            result["one_step_vs_v1"].update(v2_one_step_scale2_direct_conv=d,
                                            winograd_vs_direct=b["median_wall_s"] / d["median_wall_s"])
        if one2_bf16:
            d = summary(one2_bf16)
            result["one_step_vs_v1"].update(v2_one_step_scale2_bf16=d, speedup_v2_bf16_vs_v1_default=a["median_wall_s"] / d["median_wall_s"])
        if one4:
            c = summary(one4)
            result["one_step_vs_v1"].update(v2_one_step_scale4=c, speedup_v2_default_scale4=a["median_wall_s"] / c["median_wall_s"])
        print(json.dumps({k: v for k, v in result["one_step_vs_v1"].items() if "speedup" in k}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
