"""CCSR-v2's networks, loaded from a folder in the official layout.

The folder (``weights.resolve`` finds it) holds three diffusers folders:
``stable-diffusion-2-1-base/`` (UNet, CLIP text encoder and tokenizer,
scheduler config), ``controlnet/`` (the stage-1 ControlNet) and ``vae/`` (the
GAN-fine-tuned VAE whose decoder makes the output).

The official ControlNet is diffusers' with one change: its condition is the
VAE latent of the input through one 3x3 convolution (``condition_conv_in``)
instead of the pixel-space conditioning embedding. Here that is diffusers'
own ``ControlNetModel`` with its ``controlnet_cond_embedding`` replaced by
that convolution, so the forward pass is diffusers' (``sample + conv(cond)``)
and no network code is copied. Nothing here knows about sampling: the
engine and :mod:`ccsr.models.ccsr_v2.sampler` do that.

Weights load from safetensors, through a memory map; pickled ``.bin`` files
load only when the caller allows it (``allow_pickle``), as a pickle can run
code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ccsr.errors import CheckpointError
from ccsr.models.ccsr_v2.sampler import Schedule

log = logging.getLogger(__name__)

SAFETENSORS = "diffusion_pytorch_model.safetensors"
PICKLE = "diffusion_pytorch_model.bin"


@dataclass(frozen=True)
class Layout:
    """Where each part of an official-layout folder is."""

    root: Path
    sd: Path
    controlnet: Path
    vae: Path

    @classmethod
    def of(cls, root: Path) -> "Layout":
        """The parts of ``root``; ``Controlnet/`` (capitalised, as one re-host
        spells it) is accepted. Raises CheckpointError naming what is missing."""
        root = Path(root)
        sd = root / "stable-diffusion-2-1-base"
        cn = next((root / n for n in ("controlnet", "Controlnet", "ControlNet") if (root / n).is_dir()), root / "controlnet")
        vae = root / "vae"
        missing = [str(p.relative_to(root)) + "/" for p in (sd, cn) if not p.is_dir()]
        if missing:
            raise CheckpointError(f"{root} is not a CCSR-v2 weights folder: {', '.join(missing)} missing (expected "
                                  "stable-diffusion-2-1-base/, controlnet/ and vae/; `ccsr weights download --model ccsr-v2`)")
        if not vae.is_dir():
            if not (sd / "vae").is_dir():
                raise CheckpointError(f"{root}: vae/ missing (the fine-tuned VAE of CCSR-v2)")
            log.warning("%s has no vae/: using stable-diffusion-2-1-base/vae, not CCSR-v2's fine-tuned VAE "
                        "(results differ from the official ones)", root)
            vae = sd / "vae"
        return cls(root, sd, cn, vae)


def _config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}/config.json: cannot read ({exc})") from None


def _accepted(cls: type, cfg: dict) -> dict:
    """The config keys ``cls`` takes (diffusers folders carry private ``_...`` keys
    and, for the official ControlNet, ``use_vae_encode_condition``)."""
    import inspect

    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in cfg.items() if k in names}


def read_tensors(folder: Path, stem: str = "diffusion_pytorch_model", pickle_stem: Optional[str] = None,
                 allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of one part: ``<stem>.safetensors``, else the pickle
    ``<pickle_stem or stem>.bin`` when ``allow_pickle``."""
    st = folder / f"{stem}.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{st}: not a readable safetensors file ({exc})") from None
    pkl = folder / f"{pickle_stem or stem}.bin"
    if pkl.is_file():
        if not allow_pickle:
            raise CheckpointError(f"{folder} holds only {pkl.name}, a pickle (it can run code when loaded); convert it to "
                                  "safetensors, or allow it with CCSR_V2_ALLOW_PICKLE=true")
        return torch.load(str(pkl), map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder}: no {st.name}")


def _into(module: nn.Module, sd: dict[str, torch.Tensor], name: str, dtype: torch.dtype, device: torch.device) -> nn.Module:
    from ccsr.engine.resident import release_tensors

    moved, copied, pending = {}, [], 0
    for k in list(sd):
        v = sd.pop(k)
        moved[k] = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        if moved[k] is not v and v.device.type == "cpu":
            # A copy (another dtype or device): the file's pages of it are not read
            # again, so they leave the resident set now (every 256 MB), not when the
            # whole file does.
            copied.append(v)
            pending += v.nbytes
            if pending > 1 << 28:
                release_tensors(copied)
                copied, pending = [], 0
    release_tensors(copied)
    result = module.load_state_dict(moved, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{name}: weights do not match its config: missing {result.missing_keys[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    for pname, p in list(module.named_parameters()) + list(module.named_buffers()):
        if p.is_meta:
            raise CheckpointError(f"{name}: {pname} was not loaded")
    return module.eval().requires_grad_(False)


def build_controlnet(cfg: dict) -> nn.Module:
    """diffusers' ControlNet whose condition is a latent through one conv (on meta: no memory until loaded)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    with init_empty_weights():
        net = ControlNetModel(**_accepted(ControlNetModel, cfg))
        width = net.config.block_out_channels[0]
        net.controlnet_cond_embedding = nn.Conv2d(net.config.in_channels, width, 3, padding=1)
    return net


def controlnet_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ControlNet's names -> ours (``condition_conv_in`` is our
    ``controlnet_cond_embedding``)."""
    if not any(k.startswith("condition_conv_in.") for k in sd):
        raise CheckpointError("controlnet/: no condition_conv_in weights: this is not CCSR-v2's ControlNet "
                              "(use_vae_encode_condition must be true)")
    return {("controlnet_cond_embedding." + k[len("condition_conv_in."):] if k.startswith("condition_conv_in.") else k): v
            for k, v in sd.items()}


def text_keys(sd: dict[str, torch.Tensor], ours: Any) -> dict[str, torch.Tensor]:
    """CLIP text-encoder files name their tensors ``text_model.<name>``; recent
    transformers' ``CLIPTextModel`` holds them without the prefix. Take either."""
    ours = set(ours)
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue  # a buffer older files carry
        if k not in ours and k.startswith("text_model.") and k[len("text_model."):] in ours:
            k = k[len("text_model."):]
        elif k not in ours and "text_model." + k in ours:
            k = "text_model." + k
        out[k] = v
    return out


def _build(cls: Any, folder: Path) -> nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return cls.from_config(cls.load_config(str(folder)))


class V2Networks:
    """The loaded networks: ``unet``, ``controlnet``, ``vae``, ``text_encoder``,
    ``tokenizer`` and the ``schedule``, on one device and dtype."""

    def __init__(self, unet: nn.Module, controlnet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any,
                 schedule: Schedule, device: torch.device, dtype: torch.dtype, source: Optional[Path] = None):
        self.unet, self.controlnet, self.vae = unet, controlnet, vae
        self.text_encoder, self.tokenizer, self.schedule = text_encoder, tokenizer, schedule
        self.device, self.dtype, self.source = device, dtype, source
        self.scale_factor = float(vae.config.scaling_factor)
        #: Drop each network's file-mapped weight pages once it has run (CPU; see keep_weights_paged).
        self.release_weights = False
        #: Feed the convolutional networks channels-last activations: on a CPU in half
        #: precision oneDNN's bf16/fp16 kernels run several times faster that way (a
        #: 512 px VAE encoder 2.6x, its decoder 2x, on a 2-core Xeon with AMX); fp32
        #: keeps the plain layout its goldens were made with.
        self.channels_last = device.type == "cpu" and dtype != torch.float32

    def keep_weights_paged(self) -> None:
        """On a CPU: hand each network's weight pages back as it finishes with them,
        block by block during a forward pass and whole after it
        (:mod:`ccsr.engine.resident`), so the resident weights are about one block's."""
        from ccsr.engine import resident

        if not self.release_weights:
            self.release_weights = True
            for m in (self.text_encoder, self.vae, self.controlnet, self.unet):
                resident.release_as_it_runs(m)

    def done_with(self, *modules: nn.Module) -> None:
        """The modules have had their turn in this request (see ``release_weights``)."""
        if self.release_weights:
            from ccsr.engine import resident

            resident.release(*modules)

    @classmethod
    def from_folder(cls, root: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> "V2Networks":
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        lay = Layout.of(root)
        unet = _into(_build(UNet2DConditionModel, lay.sd / "unet"), read_tensors(lay.sd / "unet", allow_pickle=allow_pickle),
                     "stable-diffusion-2-1-base/unet", dtype, device)
        controlnet = _into(build_controlnet(_config(lay.controlnet)),
                           controlnet_keys(read_tensors(lay.controlnet, allow_pickle=allow_pickle)),
                           lay.controlnet.name, dtype, device)
        vae = _into(_build(AutoencoderKL, lay.vae), read_tensors(lay.vae, allow_pickle=allow_pickle), "vae", dtype, device)
        from accelerate import init_empty_weights

        with init_empty_weights():
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(lay.sd / "text_encoder")))
        tsd = read_tensors(lay.sd / "text_encoder", "model", "pytorch_model", allow_pickle)
        text = _into(text, text_keys(tsd, text.state_dict().keys()), "text_encoder", dtype, device)
        tokenizer = CLIPTokenizer.from_pretrained(str(lay.sd / "tokenizer"))
        sched_cfg = json.loads((lay.sd / "scheduler" / "scheduler_config.json").read_text())
        return cls(unet, controlnet, vae, text, tokenizer, Schedule.from_config(sched_cfg), device, dtype, lay.root)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """CLIP's last hidden state of the prompt padded to 77 tokens [1, 77, D] (float32)."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        out = self.text_encoder(ids.to(self.device))[0].float()
        self.done_with(self.text_encoder)
        return out

    @torch.no_grad()
    def posterior(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE posterior of images in [0, 1] (float32, unscaled)."""
        moments = self.vae.encoder(self._layout((x01 * 2 - 1).to(self.device, self.dtype)))
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        mean, logvar = moments.float().chunk(2, dim=1)
        self.done_with(self.vae)
        return mean, torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int, context: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction with the ControlNet's residuals (float32)."""
        dt = self.dtype
        ts = torch.full((x.shape[0],), int(t), dtype=torch.int64, device=self.device)
        x, context, cond = self._layout(x.to(self.device, dt)), context.to(self.device, dt), self._layout(cond.to(self.device, dt))
        down, mid = self.controlnet(x, ts, encoder_hidden_states=context, controlnet_cond=cond,
                                    conditioning_scale=1.0, return_dict=False)
        self.done_with(self.controlnet)  # before the UNet runs: one of the two is resident at a time
        out = self.unet(x, ts, encoder_hidden_states=context, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        self.done_with(self.unet)
        return out.float().contiguous() if self.channels_last else out.float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image in about [-1, 1] (float32)."""
        out = self.vae.decode(self._layout((z / self.scale_factor).to(self.device, self.dtype))).sample.float()
        self.done_with(self.vae)
        return out
