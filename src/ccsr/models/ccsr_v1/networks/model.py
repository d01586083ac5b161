"""CCSR v1 networks on diffusers blocks: UNet + latent ControlNet + VAE + constant text context.

Only the networks live here; the sampler, tiling and colour fix are pipeline
code. Weights come from an official-layout state dict through the rules in
:mod:`ccsr.models.ccsr_v1.networks.keymap`; each tensor is converted to the requested
dtype/device on its own, so peak memory stays near the model's size.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ccsr.errors import CheckpointError
from ccsr.models.ccsr_v1.networks import keymap
from ccsr.models.ccsr_v1.networks.config import CCSRConfig, UNetConfig, VAEConfig
from ccsr.models.ccsr_v1.networks.text import TextTower, empty_prompt_tokens

log = logging.getLogger(__name__)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as ldm's GroupNorm32 does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


@contextmanager
def on_meta() -> Iterator[None]:
    """Build modules whose parameters and buffers live on the meta device.

    ``with torch.device("meta")`` does the same through a torch function mode,
    which makes the first weight initialiser import torch's Python reference
    kernels (seconds on a small CPU, paid by every process that loads a model).
    Moving each tensor to meta as it is registered keeps the initialisers on
    the plain meta kernels. The CPU tensors made first are never written, so
    they cost address space, not memory. Not thread-safe: it patches
    ``nn.Module`` while the block runs (model loading is single-threaded).
    """
    reg_param, reg_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def param(self, name, p):
        if p is not None and not p.is_meta:
            p = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
        reg_param(self, name, p)

    def buffer(self, name, b, persistent=True):
        reg_buffer(self, name, None if b is None else b.to("meta"), persistent)

    # Initialising meta tensors is pointless (the checkpoint replaces every
    # one) and runs Python meta kernels: skip the initialisers altogether.
    inits = {n: getattr(nn.init, n) for n in _INITS if hasattr(nn.init, n)}
    nn.Module.register_parameter, nn.Module.register_buffer = param, buffer
    for n in inits:
        setattr(nn.init, n, _keep)
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = reg_param, reg_buffer
        for n, f in inits.items():
            setattr(nn.init, n, f)


_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
          "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


def _keep(tensor, *args, **kwargs):
    return tensor


def _upcast_group_norms(module: nn.Module) -> None:
    for m in module.modules():
        if type(m) is nn.GroupNorm:
            m.__class__ = GroupNorm32


def _unet_kwargs(u: UNetConfig) -> dict:
    n = len(u.channel_mult)
    return dict(
        in_channels=u.in_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if u.has_attention(i) else "DownBlock2D" for i in range(n)),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(u.level_channels),
        layers_per_block=u.num_res_blocks,
        downsample_padding=1,
        act_fn="silu",
        norm_num_groups=32,
        norm_eps=1e-5,
        cross_attention_dim=u.context_dim,
        transformer_layers_per_block=u.transformer_depth,
        # diffusers' "attention_head_dim" is the number of heads for SD 2.x configs.
        attention_head_dim=tuple(u.heads(c) for c in u.level_channels),
        use_linear_projection=u.use_linear_in_transformer,
        flip_sin_to_cos=True,
        freq_shift=0,
        upcast_attention=False,
    )


def build_unet(u: UNetConfig):
    from diffusers import UNet2DConditionModel

    n = len(u.channel_mult)
    up = tuple("CrossAttnUpBlock2D" if u.has_attention(i) else "UpBlock2D" for i in reversed(range(n)))
    return UNet2DConditionModel(out_channels=u.out_channels, up_block_types=up, **_unet_kwargs(u))


def build_controlnet(u: UNetConfig):
    """diffusers ControlNetModel whose conditioning embedding is a plain 3x3 conv over the LR latent."""
    from diffusers import ControlNetModel

    net = ControlNetModel(conditioning_channels=u.hint_channels, **_unet_kwargs(u))
    net.controlnet_cond_embedding = nn.Conv2d(u.hint_channels, u.model_channels, 3, padding=1, bias=False)
    return net


def build_vae(v: VAEConfig, scale_factor: float):
    from diffusers import AutoencoderKL

    n = len(v.ch_mult)
    return AutoencoderKL(
        in_channels=v.in_channels,
        out_channels=v.out_ch,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(v.ch * m for m in v.ch_mult),
        layers_per_block=v.num_res_blocks,
        latent_channels=v.z_channels,
        norm_num_groups=32,
        sample_size=v.resolution,
        scaling_factor=scale_factor,
        use_quant_conv=True,
        use_post_quant_conv=True,
        mid_block_add_attention=True,
    )


def convert_state_dict(
    sd: Mapping[str, torch.Tensor],
    config: CCSRConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    modules: tuple[str, ...] = ("unet", "controlnet", "vae", "text"),
) -> dict[str, dict[str, torch.Tensor]]:
    """Official tensors -> per-module diffusers state dicts, converted one tensor at a time."""
    out: dict[str, dict[str, torch.Tensor]] = {m: {} for m in modules}
    in_ch = config.unet.in_channels
    for e in keymap.entries(config):
        if e.module not in out:
            continue
        t = sd[e.key]
        dst = out[e.module]
        if e.op == keymap.SPLIT_IN:
            dst["conv_in.weight"] = t[:, :in_ch].to(device=device, dtype=dtype).contiguous()
            dst["controlnet_cond_embedding.weight"] = t[:, in_ch:].to(device=device, dtype=dtype).contiguous()
        elif e.op == keymap.CONV1X1:
            dst[e.target] = t.reshape(t.shape[0], t.shape[1]).to(device=device, dtype=dtype)
        else:
            dst[e.target] = t.to(device=device, dtype=dtype)
    return out


def _load_into(module: nn.Module, weights: dict[str, torch.Tensor], name: str) -> None:
    result = module.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"internal key mapping error for {name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    for pname, p in list(module.named_parameters()) + list(module.named_buffers()):
        if p.is_meta:
            raise CheckpointError(f"internal error: {name}.{pname} was not loaded")


class CCSRModel(nn.Module):
    """The CCSR v1 networks, ready for a sampler.

    Attributes: ``unet`` (UNet2DConditionModel), ``controlnet`` (ControlNetModel
    with a latent conditioning conv), ``vae`` (AutoencoderKL: encoder from
    ``cond_encoder``, decoder from ``first_stage_model``), ``scale_factor``,
    ``config``, ``unexpected_keys`` (reported by validation).
    """

    def __init__(self, config: CCSRConfig, unet: nn.Module, controlnet: nn.Module, vae: nn.Module, context: torch.Tensor):
        super().__init__()
        self.config = config
        self.unet = unet
        self.controlnet = controlnet
        self.vae = vae
        self.scale_factor = float(config.scale_factor)
        self.register_buffer("_context", context, persistent=False)
        self.unexpected_keys: list[str] = []
        self.compile_mode = "off"

    # ---------------------------------------------------------- construction
    @classmethod
    def from_state_dict(
        cls,
        sd: Mapping[str, torch.Tensor],
        config: CCSRConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "CCSRModel":
        """Build from an official-layout state dict (validated; sizes inferred when config is None)."""
        from ccsr.models.ccsr_v1.checkpoint import validate_state_dict

        if config is None:
            config = CCSRConfig.from_state_dict(sd)
        unexpected = validate_state_dict(sd, config)
        device = torch.device(device)

        context = _text_context(sd, config, device).to(dtype)

        with on_meta():
            unet = build_unet(config.unet)
            controlnet = build_controlnet(config.unet)
            vae = build_vae(config.vae, config.scale_factor)
        weights = convert_state_dict(sd, config, device, dtype, modules=("unet", "controlnet", "vae"))
        for name, module in (("unet", unet), ("controlnet", controlnet), ("vae", vae)):
            _load_into(module, weights.pop(name), name)
            _upcast_group_norms(module)
            module.eval().requires_grad_(False)
        model = cls(config, unet, controlnet, vae, context)
        model.unexpected_keys = unexpected
        return model.eval()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        config: CCSRConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "CCSRModel":
        """Load a .ckpt or .safetensors checkpoint (memory-mapped) and build the model.

        Once built, the mapping's pages of every tensor the model does not use
        as is (the text tower, read once for the context; tensors converted to
        another dtype or device; training-only keys) are released (see
        :func:`ccsr.models.ccsr_v1.checkpoint.release_mapped_pages`): they are never
        read again, and would otherwise stay in the peak memory."""
        from ccsr.models.ccsr_v1.checkpoint import load_state_dict, release_mapped_pages

        sd = load_state_dict(path, config, validate=False)
        model = cls.from_state_dict(sd, config, device=device, dtype=dtype)
        kept = {t.data_ptr() for t in model.state_dict().values()}
        released = release_mapped_pages(path, [t for t in sd.values() if t.data_ptr() not in kept])
        released += _own_weights(model, path)
        log.debug("released %.0f MB of mapped checkpoint pages (%s)", released / 2**20, path)
        return model

    # ------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    # ---------------------------------------------------------- fast paths
    def optimize(self, compile: str = "off", channels_last: bool | None = None, backend: str = "inductor") -> "CCSRModel":
        """Turn on the GPU fast paths; returns self.

        ``compile``: "off", or a ``torch.compile`` mode for the UNet and the
        ControlNet: "default", "reduce-overhead" (adds CUDA graphs: every step of
        a request has the same shapes, so one graph per request shape is
        replayed 17 times), "max-autotune" (kernel search and CUDA graphs) or
        "max-autotune-no-cudagraphs". Shapes are compiled static: the first
        request of each latent size pays the compile (tens of seconds), later
        ones replay it. The VAE is left eager (it runs once per request).
        ``channels_last``: NHWC weights for the convolution networks; None
        means on for CUDA (tensor-core convolutions are NHWC) and off elsewhere.
        ``backend``: torch.compile's backend; "inductor" generates kernels, "eager"
        only traces (a quick check of the compiled path, used by the CPU smoke run).
        """
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        if channels_last:
            for net in (self.unet, self.controlnet, self.vae):
                net.to(memory_format=torch.channels_last)
        if compile != "off" and self.compile_mode == "off":
            mode = None if compile == "default" else compile
            # nn.Module.compile compiles in place: attribute access and state-dict keys stay as they were.
            kw = dict(mode=mode) if backend == "inductor" else {}  # modes are inductor's
            self.unet.compile(backend=backend, dynamic=False, **kw)
            self.controlnet.compile(backend=backend, dynamic=False, **kw)
            self.compile_mode = compile
        return self

    # -------------------------------------------------------------- networks
    def text_context(self) -> torch.Tensor:
        """The empty-prompt context [1, 77, context_dim], computed once at load."""
        return self._context

    @torch.no_grad()
    def encode_condition(self, img01: torch.Tensor) -> torch.Tensor:
        """LR image in [0, 1] [B,3,H,W] -> condition latent [B,4,H/8,W/8] (mode * scale_factor)."""
        x = (img01.to(self.device, self.dtype) * 2 - 1)
        moments = self.vae.quant_conv(self.vae.encoder(x))
        mean = moments[:, : self.config.vae.z_channels]
        return (mean * self.scale_factor).to(_out_dtype(img01))

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise for a batch; returned in x's dtype.

        x, cond: [B,4,h,w]; t: [B] (or a scalar) real timesteps; ctx: [1 or B, 77, C]
        (defaults to the empty-prompt context).
        """
        b = x.shape[0]
        out_dtype = _out_dtype(x)
        xs = x.to(self.device, self.dtype)
        cs = cond.to(self.device, self.dtype)
        if cs.shape[0] != b:
            cs = cs.expand(b, *cs.shape[1:])
        ctx = self._context if ctx is None else ctx
        ctx = ctx.to(self.device, self.dtype)
        if ctx.shape[0] != b:
            ctx = ctx.expand(b, *ctx.shape[1:])
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(b)
        if self.compile_mode in ("reduce-overhead", "max-autotune"):
            # CUDA graphs reuse their output buffers: tell them a new evaluation starts
            # (the previous step's outputs have all been consumed by now).
            torch.compiler.cudagraph_mark_step_begin()
        down, mid = self.controlnet(
            xs, t, encoder_hidden_states=ctx, controlnet_cond=cs, conditioning_scale=1.0, return_dict=False
        )
        out = self.unet(
            xs,
            t,
            encoder_hidden_states=ctx,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
        return out.to(out_dtype)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image in about [-1, 1] (not clamped); returned in z's dtype."""
        out = self.vae.decode(z.to(self.device, self.dtype) / self.scale_factor, return_dict=False)[0]
        return out.to(_out_dtype(z))


def _own_weights(model: nn.Module, path: str | os.PathLike) -> int:
    """Give every weight that is still a view of the checkpoint's file mapping
    its own memory, one tensor at a time, and release the mapped pages.

    Why: pages of a file mapping are reclaimable. On a machine short of
    memory (no swap, other processes growing) the kernel takes them back,
    and every network evaluation faults gigabytes in again: a full-size run
    measured 2.6 M page faults and far more wall than CPU time. Private
    (anonymous) memory stays. Copying tensor by tensor and dropping each
    source's pages at once keeps the peak at the model's size. Returns the
    bytes released (0 where the mapping cannot be seen, e.g. not Linux:
    then the weights stay mapped, as before)."""
    from ccsr.models.ccsr_v1.checkpoint import is_mapped, mapped_ranges, release_mapped_pages

    ranges = mapped_ranges(path)
    if not ranges:
        return 0
    released = 0
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, t in store.items():
                if t is None or t.device.type != "cpu" or not is_mapped(t, ranges):
                    continue
                src = t.detach()  # still the mapped data after t moves
                own = src.clone()
                if isinstance(t, nn.Parameter):
                    t.data = own
                else:
                    store[name] = own
                released += release_mapped_pages(path, [src], ranges)
    return released


#: Values of the ``compile`` setting (see :meth:`CCSRModel.optimize`).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


@torch.no_grad()
def _text_context(sd: Mapping[str, torch.Tensor], config: CCSRConfig, device: torch.device) -> torch.Tensor:
    """Run the text tower once (float32) for the empty prompt, then let it go."""
    with on_meta():
        tower = TextTower(config.text)
    weights = convert_state_dict(sd, config, device, torch.float32, modules=("text",))["text"]
    _load_into(tower, weights, "text tower")
    tower.eval()
    return tower(empty_prompt_tokens(config.text.context_length).to(device))
