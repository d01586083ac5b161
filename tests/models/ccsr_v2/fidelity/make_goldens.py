"""Make the CCSR-v2 goldens by running the OFFICIAL code (not part of this
repository) on the tiny random weights, in fp32 on a CPU.

Run it with a separate virtual environment that has what the official code
pins (diffusers 0.21.0, transformers 4.25.1, tokenizers 0.13.3, accelerate
1.2.0, huggingface_hub 0.25.2, numpy<2, einops, torch 2.13 CPU) and a checkout
of the official `CCSR-v2.0` branch (csslc/CCSR; commit in reference.json):

    ccsr weights random --model ccsr-v2 -o /tmp/v2tiny          # seed 0: the test's weights
    OFFICIAL_V2=/path/to/CCSR-v2.0 /path/to/venv/bin/python make_goldens.py --weights /tmp/v2tiny

It reproduces test_ccsr_tile.py's per-image steps (pre-resize, pipeline call,
colour fix, final resize) for each case of cases.json, with the seed placed at
the start of the request (torch.manual_seed and a fresh generator after the
models load, as docs/ccsr-v2.md defines it). Patched at run time only:
torch.cuda.synchronize is a no-op, no xformers, the tiled VAE's device is the
CPU, and the pipeline module's torch.float16 casts act as float32. `shim/` stands
in for the torchvision functions the official code imports (torchvision from
PyPI does not import on this CPU torch), with torchvision's semantics.
"""

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFICIAL = Path(os.environ.get("OFFICIAL_V2", "/work/official-v2"))
sys.path.insert(0, str(HERE / "shim"))
sys.path.insert(0, str(OFFICIAL))

import torch  # noqa: E402

sys.path.insert(0, str(HERE))
from hashing import pixels_sha256, weights_sha256  # noqa: E402

torch.cuda.synchronize = lambda *a, **k: None

DEFAULTS = dict(prompt="clean, high-resolution, 8k",
                negative_prompt="blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed",
                guidance_scale=1.0, steps=1, t_max=0.6666, t_min=0.0, start_point="lr", color_fix_type="adain",
                process_size=512, scale=4, tile_diffusion="none", tile_diffusion_size=512, tile_diffusion_stride=256,
                tile_vae=False, tile_vae_decoder_size=224)


#: The precision the official pipeline's float16 casts stand for (fp32 for the goldens;
#: --dtype bf16 for benchmarks/bench_v2.py's same-precision comparison).
DTYPE = torch.float32


def pipeline(weights: Path, o: dict):
    import myutils.devices as mdev

    mdev.device = torch.device("cpu")
    mdev.get_optimal_device = lambda: torch.device("cpu")
    import pipelines.pipeline_ccsr as pc

    proxy = types.ModuleType("torch_fp32")
    proxy.__dict__.update(torch.__dict__)
    proxy.float16 = DTYPE
    pc.torch = proxy
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from models.controlnet import ControlNetModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = weights / "stable-diffusion-2-1-base"
    unet = UNet2DConditionModel.from_pretrained(str(sd), subfolder="unet")
    controlnet = ControlNetModel.from_pretrained(str(weights), subfolder="controlnet")
    vae = AutoencoderKL.from_pretrained(str(weights), subfolder="vae")
    text = CLIPTextModel.from_pretrained(str(sd), subfolder="text_encoder")
    for m in (vae, text, unet, controlnet):
        m.requires_grad_(False)
        m.to("cpu", dtype=DTYPE)
    pipe = pc.StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(str(sd), subfolder="tokenizer"),
        feature_extractor=None, unet=unet, controlnet=controlnet,
        scheduler=DDPMScheduler.from_pretrained(str(sd), subfolder="scheduler"), safety_checker=None,
        requires_safety_checker=False)
    if o["tile_vae"]:
        pipe._init_tiled_vae(encoder_tile_size=1024, decoder_tile_size=o["tile_vae_decoder_size"])
    return pipe


def run_case(weights: Path, image_path: Path, opts: dict):
    from myutils.wavelet_color_fix import adain_color_fix, wavelet_color_fix
    from PIL import Image

    o = {**DEFAULTS, **opts}
    pipe = pipeline(weights, o)
    image = Image.open(image_path).convert("RGB")
    ow, oh = image.size
    s, ps = o["scale"], o["process_size"]
    if ow < ps // s or oh < ps // s:
        r = (ps // s) / min(ow, oh)
        image = image.resize((round(r * ow), round(r * oh)))
    image = image.resize((image.size[0] * s, image.size[1] * s))
    image = image.resize((image.size[0] // 8 * 8, image.size[1] // 8 * 8))
    torch.manual_seed(o["seed"])
    generator = torch.Generator(device="cpu").manual_seed(o["seed"])
    with torch.no_grad():
        _, out = pipe(o["t_max"], o["t_min"], o["tile_diffusion"] == "gaussian", o["tile_diffusion_size"],
                      o["tile_diffusion_stride"], o["prompt"], image, num_inference_steps=o["steps"], generator=generator,
                      height=image.size[1], width=image.size[0], guidance_scale=o["guidance_scale"],
                      negative_prompt=o["negative_prompt"], conditioning_scale=1.0, start_steps=999,
                      start_point=o["start_point"], use_vae_encode_condition=True)
    out = out.images[0]
    if o["color_fix_type"] != "none":
        out = (wavelet_color_fix if o["color_fix_type"] == "wavelet" else adain_color_fix)(out, image)
    return out.resize((ow * s, oh * s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", type=Path, help="Run one request on this image instead of the cases (benchmarks/bench_v2.py).")
    ap.add_argument("--out", type=Path, help="With --one: where the PNG goes.")
    ap.add_argument("--opts", default="{}", help="With --one: the request's fields as JSON.")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="With --one: the precision of the networks (the goldens are fp32).")
    args = ap.parse_args()
    global DTYPE
    DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.one is None and DTYPE != torch.float32:
        raise SystemExit("the goldens are made in fp32")
    torch.set_num_threads(args.threads)
    if args.one is not None:
        run_case(args.weights, args.one, json.loads(args.opts)).save(args.out)
        return
    cases = json.loads((HERE / "cases.json").read_text())
    commit = subprocess.run(["git", "-C", str(OFFICIAL), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ref = {"official": {"repository": "csslc/CCSR, branch CCSR-v2.0 (fork ducchung0002/CCSRv2)",
                        "commit": commit or os.environ.get("OFFICIAL_V2_COMMIT", "unknown")},
           "weights_sha256": weights_sha256(args.weights), "threads": args.threads, "cases": {}}
    for name, case in cases.items():
        out = run_case(args.weights, HERE / "data" / case["input"], case["opts"])
        out.save(HERE / "data" / f"{name}.png")
        ref["cases"][name] = {**case, "size": list(out.size),
                              "pixels_sha256": pixels_sha256(out)}
        print(name, out.size, flush=True)
    (HERE / "data" / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
