"""Side by side with the official CCSR code: whole-process wall time and peak memory.

Each run is a fresh process, from start to the written PNG, as a user waits
for it: Python imports, model loading (the official code also builds its text
and VAE towers and reads the whole checkpoint into memory), the request, the
file. Ours runs the ``ccsr upscale`` command; the official code runs its
Replicate predictor (``predict.py``'s ``Predictor.predict``, unmodified)
on a model built from its own ``configs/model/ccsr_stage2.yaml``. Both read
the same random checkpoint (official layout, Lightning ``.ckpt``, fp32),
written once into ``benchmarks/.cache/`` (git-ignored). Runs alternate
(ours, official, ours, ...) so that load from the other processes on a
shared machine hits both alike; medians and the ratio ours/official are
printed and saved in ``benchmarks/results/vs-official-cpu.json`` with the
machine named. Peak memory is each process's peak RSS (``wait4``).

Setting up the official side (outside this repository; nothing of it is
committed here):

1. ``git clone https://github.com/csslc/CCSR /somewhere/official-ccsr`` and
   ``git checkout 15778ed`` (the commit the fidelity goldens were made with).
2. A separate virtual environment, e.g. ``python3 -m venv /somewhere/official-venv``,
   then ``pip install torch==2.13.0 numpy pillow omegaconf einops ftfy regex tqdm
   opencv-python-headless transformers huggingface_hub`` (the CPU torch build
   that this project pins) and ``pip install --no-deps open_clip_torch==2.24.0``
   (its torchvision dependency is left out: torchvision does not match this
   torch build and inference does not use it).
3. Run: ``python benchmarks/bench_vs_official.py --official /somewhere/official-ccsr
   --official-python /somewhere/official-venv/bin/python`` (or set
   ``CCSR_OFFICIAL`` and ``CCSR_OFFICIAL_PYTHON``).

What this script stands in for when it drives the official code (in the
official process only, in memory; the checkout is not modified): the
training-only packages that inference imports but never calls
(``pytorch_lightning``: a LightningModule that is a plain ``nn.Module``,
``seed_everything`` = ``torch.manual_seed``; ``torchvision``, imported by
``open_clip``'s image transforms and ``make_grid``; ``cog``'s decorators), and
the training-only LPIPS decoder loss (an empty module). The text tower is
built without downloading pretrained weights (``version=None``), then the
checkpoint's weights are loaded into the whole model with ``strict=True``.
For the tiny architecture, the OpenCLIP model is built with the tiny yaml's
text sizes (as the fidelity goldens were made). xformers is absent, so the
official attention runs its plain path, as on any machine without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
FIXTURES = ROOT / "tests" / "fixtures"

_TILED = dict(tile_diffusion="gaussian", tile_diffusion_size=512, tile_diffusion_stride=256)
# name: (architecture, input size, request fields)
CASES = {
    "tiny-256to512": ("tiny", (256, 256), dict(scale=2, steps=50)),
    # 512 -> 1024 with 512 px tiles at stride 256: 3 x 3 = 9 tiles, 7 evaluations each
    "tiny-tiled-9": ("tiny", (512, 512), dict(scale=2, steps=20, **_TILED)),
    "full-256to512": ("v1", (256, 256), dict(scale=2, steps=50)),
    # full size, 9 tiles of 256 px at stride 128 over a 512 px image
    "full-tiled-9": ("v1", (256, 256), dict(scale=2, steps=20, tile_diffusion="gaussian",
                                            tile_diffusion_size=256, tile_diffusion_stride=128)),
}
DEFAULT_CASES = ["tiny-256to512", "tiny-tiled-9", "full-256to512"]


def checkpoint(arch: str) -> Path:
    """The random checkpoint (seed 0) as an official Lightning .ckpt, written once."""
    path = CACHE / f"random-{arch}-fp32.ckpt"
    if not path.exists():
        from ccsr.models.ccsr_v1.networks.config import CCSRConfig
        from ccsr.models.ccsr_v1.random_weights import random_state_dict
        import torch

        cfg = CCSRConfig.v1() if arch == "v1" else CCSRConfig.from_yaml(FIXTURES / "ccsr-tiny.yaml")
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", flush=True)
        torch.save({"state_dict": random_state_dict(cfg, seed=0)}, str(path) + ".part")
        os.replace(str(path) + ".part", path)
    return path


def input_image(size: tuple[int, int]) -> Path:
    from PIL import Image

    path = CACHE / f"astronaut-{size[0]}x{size[1]}.png"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with Image.open(FIXTURES / "images" / "astronaut.png") as im:
            im.convert("RGB").resize(size, Image.BICUBIC).save(path)
    return path


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run a process; wall seconds, CPU seconds (user + sys), peak RSS (MB), exit status
    and the load averages around it.

    On a shared machine the wall time moves with the other processes' load;
    the CPU time much less so (it still grows a little with cache and
    hyper-thread contention), so both are kept."""
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
           "sys_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode,
           # page faults: many minor ones and wall far above CPU mean the weights were reclaimed and re-read
           "minor_faults": usage.ru_minflt, "major_faults": usage.ru_majflt,
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(STAGES_TAG):
            res.update(json.loads(line[len(STAGES_TAG):]))
    if proc.returncode:
        res["tail"] = text[-3000:]
    return res


# ------------------------------------------------------------ stage timings
STAGES_TAG = "BENCH-STAGES "


class Stages:
    """Wall and CPU seconds of named stages in this process, printed as one
    tagged JSON line at exit (the driver reads it from the captured output).

    ``wrap(owner, name, stage)`` times every call of ``owner.name``; calls of
    a stage add up and are counted (the network evaluations are one stage)."""

    def __init__(self) -> None:
        import atexit

        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.data: dict[str, dict] = {}
        self.first: dict[str, float] = {}
        atexit.register(self.report)

    def wrap(self, owner, name: str, stage: str) -> None:
        import functools

        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed_call(*a, **k):
            self.first.setdefault(stage, time.perf_counter() - self.t0)
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                d = self.data.setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})
                d["wall_s"] += time.perf_counter() - w
                d["cpu_s"] += time.process_time() - c
                d["calls"] += 1

        setattr(owner, name, timed_call)

    def report(self) -> None:
        total = {"wall_s": time.perf_counter() - self.t0, "cpu_s": time.process_time() - self.c0}
        print(STAGES_TAG + json.dumps({"stages": self.data, "started_at_s": self.first, "total": total}), flush=True)


def ours_entry() -> None:
    """``ccsr upscale`` with its stages timed (the command itself is unchanged)."""
    stages = Stages()
    import torch  # noqa: F401 - timed as the import stage

    stages.data["imports_torch"] = {"wall_s": time.perf_counter() - stages.t0, "cpu_s": time.process_time() - stages.c0, "calls": 1}
    from ccsr.models.ccsr_v1.networks import model as ccsr_model
    from ccsr.models.ccsr_v1 import preprocess

    stages.wrap(ccsr_model.CCSRModel, "from_file", "load_model_total")
    stages.wrap(ccsr_model, "_text_context", "text_context")
    stages.wrap(ccsr_model, "convert_state_dict", "convert_weights")
    stages.wrap(ccsr_model.CCSRModel, "encode_condition", "vae_encode")
    stages.wrap(ccsr_model.CCSRModel, "eps", "network_evaluations")
    stages.wrap(ccsr_model.CCSRModel, "decode", "vae_decode")
    stages.wrap(preprocess, "save_image", "png_write")
    from ccsr.cli import main

    main()


def ours_cmd(case: str, out: Path) -> list[str]:
    arch, size, fields = CASES[case]
    entry = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_vs_official as b; b.ours_entry()"
    cmd = [sys.executable, "-c", entry, "upscale", str(input_image(size)),
           "-o", str(out), "--weights", str(checkpoint(arch)), "--device", "cpu", "--dtype", "fp32", "--seed", "1"]
    if arch == "tiny":
        cmd += ["--config", str(FIXTURES / "ccsr-tiny.yaml")]
    for k, v in fields.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return cmd


def official_cmd(case: str, out: Path, official: Path, python: str) -> list[str]:
    arch, size, fields = CASES[case]
    spec = {"checkout": str(official), "arch": arch, "ckpt": str(checkpoint(arch)), "input": str(input_image(size)),
            "output": str(out), "tiny_yaml": str(FIXTURES / "ccsr-tiny.yaml"), "fields": fields, "seed": 1}
    return [python, __file__, "--official-run", json.dumps(spec)]


def output_size(path: Path) -> list[int]:
    from PIL import Image

    with Image.open(path) as im:
        return [im.width, im.height]


def same_request(case: str, ok: dict[str, list[dict]]) -> dict:
    """What both sides were asked, and proof that they produced the same output size.

    Both get the same fields (ours as CLI flags, the official predictor as
    its arguments), t_max 0.6667 / t_min 0.3333 (both defaults), seed 1,
    float32 on the CPU; the official code always runs fp32, ours is given
    ``--dtype fp32``. Raises when the written PNGs differ in size."""
    import torch

    sizes = {side: sorted({tuple(x["output_size"]) for x in runs}) for side, runs in ok.items()}
    if sizes["ours"] and sizes["official"] and sizes["ours"] != sizes["official"]:
        raise SystemExit(f"{case}: the two sides wrote different output sizes: {sizes}")
    from ccsr.models.ccsr_v1 import sampler
    from ccsr.models.ccsr_v1 import schedule

    f = CASES[case][2]
    return {"fields": f, "t_max": 0.6667, "t_min": 0.3333, "seed": 1, "dtype": "fp32", "device": "cpu",
            "color_fix_type": f.get("color_fix_type", "adain"), "tile_vae": bool(f.get("tile_vae", False)),
            "network_evaluations": sampler.num_evaluations(schedule.make_schedule(f["steps"]).num_steps, 0.6667, 0.3333),
            "output_size": {side: [list(x) for x in v] for side, v in sizes.items()},
            "torch_threads": torch.get_num_threads()}


# ------------------------------------------------------------- official side
def _install_stand_ins() -> None:
    """Modules inference imports but never uses (see the module docstring)."""
    import importlib.machinery
    import types

    import torch
    from torch import nn

    class _Meta(type):
        def __getattr__(cls, name):  # InterpolationMode.BICUBIC and the like
            if name.startswith("__"):
                raise AttributeError(name)
            return name

    class _Any(types.ModuleType):
        def __getattr__(self, name):  # any class or function: a do-nothing stand-in
            if name.startswith("__"):
                raise AttributeError(name)
            return _Meta(name, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, x, *a, **k: x})

    class LightningModule(nn.Module):
        @property
        def device(self):
            return next(self.parameters()).device

        def freeze(self):
            self.eval()
            for p in self.parameters():
                p.requires_grad = False

    pl = types.ModuleType("pytorch_lightning")
    pl.LightningModule = LightningModule
    pl.seed_everything = lambda seed, *a, **k: torch.manual_seed(seed)
    pl.Callback = object
    utilities = types.ModuleType("pytorch_lightning.utilities")
    dist = types.ModuleType("pytorch_lightning.utilities.distributed")
    dist.rank_zero_only = lambda f: f
    pl.utilities, utilities.distributed = utilities, dist
    sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.utilities": utilities,
                        "pytorch_lightning.utilities.distributed": dist})
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.transforms.functional_tensor", "torchvision.utils", "torchvision.ops",
                 "torchvision.ops.misc"):
        sys.modules[name] = _Any(name)
        sys.modules[name].__path__ = []
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    cog = types.ModuleType("cog")
    cog.BasePredictor = object
    cog.Input = lambda default=None, **k: default
    cog.Path = Path
    sys.modules["cog"] = cog


class NoDecoderLoss:  # replaced by an nn.Module subclass in official_run (torch is imported there)
    pass


def official_run(spec: dict) -> None:
    """Runs inside the official venv, cwd = the checkout."""
    stages = Stages()
    sys.path.insert(0, spec["checkout"])
    os.chdir(spec["checkout"])
    _install_stand_ins()
    import shutil

    import torch
    from omegaconf import OmegaConf
    from torch import nn

    global NoDecoderLoss

    class NoDecoderLoss(nn.Module):  # noqa: F811 - the training-only LPIPS loss
        def __init__(self, *a, **k):
            super().__init__()
            self.discriminator = nn.Module()

    import open_clip

    import predict  # the official predictor module
    from ldm.modules.encoders import modules as enc
    from utils.common import instantiate_from_config, load_state_dict

    cfg = OmegaConf.load("configs/model/ccsr_stage2.yaml")
    cfg.params.lossconfig = {"target": "__main__.NoDecoderLoss"}
    cfg.params.cond_stage_config.params.version = None  # no download; weights come from the checkpoint
    if spec["arch"] == "tiny":
        tiny = OmegaConf.load(spec["tiny_yaml"]).params
        text = tiny.cond_stage_config.params
        for key in ("control_stage_config", "unet_config"):
            cfg.params[key].params = OmegaConf.merge(cfg.params[key].params, tiny[key].params)
        cfg.params.first_stage_config.params.ddconfig = OmegaConf.merge(
            cfg.params.first_stage_config.params.ddconfig, tiny.first_stage_config.params.ddconfig)

        def tiny_clip(arch, device=None, pretrained=None):
            model = open_clip.CLIP(
                embed_dim=text.width,
                vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=text.width,
                                                     heads=text.heads, layers=text.layers))
            return model, None, None

        enc.open_clip.create_model_and_transforms = tiny_clip
    stages.data["imports"] = {"wall_s": time.perf_counter() - stages.t0, "cpu_s": time.process_time() - stages.c0, "calls": 1}
    w, c = time.perf_counter(), time.process_time()
    model = instantiate_from_config(cfg)
    stages.data["model_construction"] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "calls": 1}
    w, c = time.perf_counter(), time.process_time()
    sd = torch.load(spec["ckpt"], map_location="cpu")
    stages.data["checkpoint_read"] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "calls": 1}
    w, c = time.perf_counter(), time.process_time()
    load_state_dict(model, sd, strict=True)
    del sd
    model.freeze()
    stages.data["load_state_dict"] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "calls": 1}
    stages.wrap(model, "get_learned_conditioning", "text_context")
    stages.wrap(model, "apply_condition_encoder", "vae_encode")
    stages.wrap(model, "apply_model", "network_evaluations")
    stages.wrap(model, "decode_first_stage", "vae_decode")
    model.to(spec.get("device", "cpu"))  # benchmarks/gpu_check.py runs it on CUDA
    p = predictor = predict.Predictor()
    predictor.model = model
    f = spec["fields"]
    tiled = f.get("tile_diffusion", "none") != "none"
    times = []
    for _ in range(spec.get("repeats", 1)):
        t0 = time.perf_counter()
        out = p.predict(
            image=Path(spec["input"]), sr_scale=f["scale"], steps=f["steps"], tile_diffusion=tiled,
            tile_diffusion_size=f.get("tile_diffusion_size", 512), tile_diffusion_stride=f.get("tile_diffusion_stride", 256),
            tile_vae=bool(f.get("tile_vae", False)), vae_decoder_tile_size=224, vae_encoder_tile_size=1024,
            color_fix_type=f.get("color_fix_type", "adain"), t_max=0.6667, t_min=0.3333, seed=spec["seed"])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    print("OFFICIAL_TIMES " + json.dumps(times), flush=True)  # predict() alone, for gpu_check.py
    w, c = time.perf_counter(), time.process_time()
    shutil.copyfile(out, spec["output"])  # the PNG itself was written inside predict (counted there)
    stages.data["png_copy"] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "calls": 1}


# ------------------------------------------------------------------- driver
#: torch on an AVX-512 machine limited to what an AVX2-only CPU (such as the AMD EPYC
#: of issue 9's first figures) runs: ATen's vector kernels, oneDNN (convolutions,
#: half precision) and MKL (matrix products). Same cores, narrower vectors: a stand-in,
#: not that machine.
AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=os.environ.get("CCSR_OFFICIAL"), help="official CCSR checkout (commit 15778ed)")
    ap.add_argument("--official-python", default=os.environ.get("CCSR_OFFICIAL_PYTHON"), help="python of the official venv")
    ap.add_argument("--cases", nargs="*", default=DEFAULT_CASES, help=f"cases: {', '.join(CASES)}")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side per case (medians reported)")
    ap.add_argument("--out", type=Path, default=RESULTS / "vs-official-cpu.json")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: limit torch to AVX2 on both sides (see AVX2_LIMITS), standing in for an AVX2-only CPU")
    ap.add_argument("--official-run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official_run:
        official_run(json.loads(args.official_run))
        return
    if not args.official or not args.official_python:
        ap.error("give --official and --official-python (or CCSR_OFFICIAL / CCSR_OFFICIAL_PYTHON); see the docstring")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    args.isa_limits = {}
    if args.isa == "avx2":
        os.environ.update(AVX2_LIMITS)  # every process below inherits them
        args.isa_limits = dict(AVX2_LIMITS, capability={
            side: subprocess.run([py, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                                 capture_output=True, text=True).stdout.strip()
            for side, py in (("ours", sys.executable), ("official", args.official_python))})
        print(f"ISA limited: {args.isa_limits}", flush=True)

    results = []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            runs: dict[str, list[dict]] = {"ours": [], "official": []}
            for r in range(args.repeats):
                for side in ("ours", "official"):
                    out = Path(tmp) / f"{case}-{side}-{r}.png"
                    cmd = ours_cmd(case, out) if side == "ours" else official_cmd(case, out, args.official, args.official_python)
                    print(f"== {case} {side} run {r + 1}", flush=True)
                    res = timed(cmd, cwd=ROOT if side == "ours" else args.official)
                    if res["rc"] == 0 and not out.exists():
                        res.update(rc=-1, tail="no output written")
                    if res["rc"] == 0:
                        res["output_size"] = output_size(out)
                    print(f"   {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, peak RSS {res['peak_rss_mb']:.0f} MB, "
                          f"load {res['load_before'][0]:.1f}" if res["rc"] == 0 else res["tail"], flush=True)
                    runs[side].append(res)
                    save(args, results + [{"case": case, "partial": True, "runs": runs}], load_start)
            ok = {s: [x for x in v if x["rc"] == 0] for s, v in runs.items()}
            entry = {"case": case, "architecture": CASES[case][0], "input": list(CASES[case][1]), "fields": CASES[case][2],
                     "request": same_request(case, ok), "runs": runs}
            if ok["ours"] and ok["official"]:
                for key in ("wall_s", "cpu_s", "peak_rss_mb"):
                    a = statistics.median(x[key] for x in ok["ours"])
                    b = statistics.median(x[key] for x in ok["official"])
                    entry[f"ours_{key}"], entry[f"official_{key}"], entry[f"ratio_{key}"] = a, b, a / b
                print(f"   {case}: wall {entry['ours_wall_s']:.1f} s vs {entry['official_wall_s']:.1f} s "
                      f"({entry['ratio_wall_s']:.2f}x); CPU {entry['ours_cpu_s']:.1f} s vs {entry['official_cpu_s']:.1f} s "
                      f"({entry['ratio_cpu_s']:.2f}x); peak RSS {entry['ours_peak_rss_mb']:.0f} vs "
                      f"{entry['official_peak_rss_mb']:.0f} MB ({entry['ratio_peak_rss_mb']:.2f}x)", flush=True)
            results.append(entry)
            save(args, results, load_start)  # after every case: a long run stopped early keeps what it measured


def save(args, results: list[dict], load_start) -> None:
    from machine_info import machine

    report = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "note": "whole process (imports, loading, request, PNG written); medians; ratio = ours / official; "
                      "cpu_s = user + sys of the process (wait4), less sensitive to the machine's load than wall_s",
              "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
              "isa_limits": getattr(args, "isa_limits", {}) or "none (the CPU's own instructions)",
              "official_commit": subprocess.run(["git", "-C", str(args.official), "rev-parse", "HEAD"],
                                                capture_output=True, text=True).stdout.strip(),
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
