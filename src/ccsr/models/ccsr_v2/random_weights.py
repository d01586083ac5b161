"""Random CCSR-v2 weights in the official folder layout, for tests, demos
and benchmarks (``ccsr weights random --model ccsr-v2``).

Two architectures: ``tiny`` (a few MB: the tests') and ``full`` (SD-2.1-base's
sizes, 1.7 G parameters: the benchmarks'). Every tensor is random, the
ControlNet's zero-initialised output convolutions included (with zeros the
ControlNet would not change the result and a test could not see it). Each
safetensors file's metadata carries the random-weights marker, so everything
that loads the folder says it holds no real model.

The tokenizer is made offline: every byte-level character, alone and as a
word end, and no merges (a real CLIP vocabulary cannot be downloaded here);
token ids stay below the text encoder's vocabulary of either size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ccsr.models.ccsr_v2.weights import random_marker

Arch = Literal["tiny", "full"]
#: Tokens of the offline tokenizer: 256 characters, the same as word ends, start and end.
TOKENS = 514

SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1, "set_alpha_to_one": False,
    "skip_prk_steps": True, "clip_sample": False, "trained_betas": None,
}

_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def unet_config(arch: Arch) -> dict:
    if arch == "full":
        return dict(sample_size=64, in_channels=4, out_channels=4, down_block_types=_DOWN, up_block_types=_UP,
                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
                    attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    return dict(sample_size=16, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
                norm_num_groups=8, cross_attention_dim=16, attention_head_dim=(2, 2), use_linear_projection=True)


def vae_config(arch: Arch) -> dict:
    blocks = (128, 256, 512, 512) if arch == "full" else (32, 32, 32, 32)
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=blocks,
                layers_per_block=2, latent_channels=4, norm_num_groups=32,
                sample_size=768 if arch == "full" else 64, scaling_factor=0.18215)


def text_config(arch: Arch) -> dict:
    if arch == "full":
        return dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                    bos_token_id=TOKENS - 2, eos_token_id=TOKENS - 1, pad_token_id=0)
    return dict(vocab_size=TOKENS, hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, hidden_act="gelu", projection_dim=16, bos_token_id=TOKENS - 2,
                eos_token_id=TOKENS - 1, pad_token_id=0)


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 byte values (the BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer without merges: "!" is id 0 (the padding SD-2.1 uses)."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}))


def randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Every parameter random: matrices and kernels N(0, 1/fan_in), norm scales
    near 1, biases near 0 (activations stay finite through the deep networks)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def _save(module: nn.Module, folder: Path, config: dict, file: str, dtype: torch.dtype, seed: int,
          rename: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in module.state_dict().items():
        for old, new in (rename or {}).items():
            if k.startswith(old):
                k = new + k[len(old):]
        sd[k] = v.to(dtype).contiguous()
    save_file(sd, str(folder / file), metadata={"format": "pt", **random_marker(seed)})
    (folder / "config.json").write_text(json.dumps(config, indent=1, default=list))


def write_random_weights(root: Path, arch: Arch = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Write a random folder in the official layout at ``root``; returns ``root``."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    sd = root / "stable-diffusion-2-1-base"
    gen = torch.Generator().manual_seed(seed)

    ucfg = unet_config(arch)
    unet = UNet2DConditionModel(**ucfg)
    randomize(unet, gen)
    _save(unet, sd / "unet", {"_class_name": "UNet2DConditionModel", **dict(unet.config)},
          "diffusion_pytorch_model.safetensors", dtype, seed)
    del unet

    ccfg = {k: v for k, v in ucfg.items() if k not in ("sample_size", "out_channels", "up_block_types")}
    cn = ControlNetModel(**ccfg)
    cn.controlnet_cond_embedding = nn.Conv2d(4, ucfg["block_out_channels"][0], 3, padding=1)
    randomize(cn, gen)
    official = {"_class_name": "ControlNetModel", **{k: v for k, v in dict(cn.config).items() if not k.startswith("_")},
                "use_vae_encode_condition": True}
    _save(cn, root / "controlnet", official, "diffusion_pytorch_model.safetensors", dtype, seed,
          rename={"controlnet_cond_embedding.": "condition_conv_in."})
    del cn

    vcfg = vae_config(arch)
    vae = AutoencoderKL(**vcfg)
    randomize(vae, gen)
    _save(vae, root / "vae", {"_class_name": "AutoencoderKL", **dict(vae.config)},
          "diffusion_pytorch_model.safetensors", dtype, seed)
    del vae

    tcfg = CLIPTextConfig(**text_config(arch))
    text = CLIPTextModel(tcfg)
    randomize(text, gen)
    tdict = {**tcfg.to_dict(), "architectures": ["CLIPTextModel"], "torch_dtype": "float32"}
    tdict.pop("transformers_version", None)
    # Named as the released text encoders name them (``text_model.`` first), whatever
    # this transformers version calls them inside.
    prefix = {} if next(iter(text.state_dict())).startswith("text_model.") else {"": "text_model."}
    _save(text, sd / "text_encoder", tdict, "model.safetensors", dtype, seed, rename=prefix)
    del text

    write_tokenizer(sd / "tokenizer")
    (sd / "scheduler").mkdir(parents=True, exist_ok=True)
    (sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=1))
    (sd / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": None, "feature_extractor": [None, None], "requires_safety_checker": False}, indent=1))
    return root
