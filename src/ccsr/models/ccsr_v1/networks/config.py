"""The CCSR v1 architecture as data.

One frozen dataclass describes every size the model needs, so the same code
builds the full v1 model and the tiny test model. It can be read from an
official-format YAML (``configs/model/ccsr_stage2.yaml`` layout), inferred from
the tensor shapes of a checkpoint, or taken from :meth:`CCSRConfig.v1`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from ccsr.errors import CheckpointError

HEAD_WIDTH = 64  # SD 2.x attention heads are 64 channels wide.


@dataclass(frozen=True)
class UNetConfig:
    """Sizes shared by the ldm UNet and the DiffBIR-style ControlNet."""

    in_channels: int = 4
    out_channels: int = 4
    hint_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_head_channels: int = HEAD_WIDTH
    transformer_depth: int = 1
    context_dim: int = 1024
    use_linear_in_transformer: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(
            self, "attention_resolutions", tuple(sorted((int(a) for a in self.attention_resolutions), reverse=True))
        )

    @property
    def level_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]

    def has_attention(self, level: int) -> bool:
        """ldm puts a transformer at a level when its downsample factor is listed."""
        return 2**level in self.attention_resolutions

    def heads(self, channels: int) -> int:
        return channels // self.num_head_channels


@dataclass(frozen=True)
class VAEConfig:
    """ldm AutoencoderKL sizes (``ddconfig`` plus ``embed_dim``)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 256
    attn_resolutions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(sorted(int(a) for a in self.attn_resolutions)))
        if self.attn_resolutions:
            raise CheckpointError("VAE attn_resolutions other than [] are not supported (CCSR v1 uses [])")
        if self.embed_dim != self.z_channels:
            raise CheckpointError("VAE embed_dim must equal z_channels (both 4 in CCSR v1)")


@dataclass(frozen=True)
class TextConfig:
    """OpenCLIP text tower sizes (ViT-H-14 by default), read at the penultimate layer."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 1024  # text_projection output width; unused at inference


@dataclass(frozen=True)
class CCSRConfig:
    """Everything needed to build (or generate weights for) a CCSR v1 model."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    t_max: float = 0.6667
    t_min: float = 0.3333
    image_size: int = 64
    latent_channels: int = 4

    def __post_init__(self) -> None:
        if self.text.width != self.unet.context_dim:
            raise CheckpointError(
                f"text tower width {self.text.width} does not match the UNet context_dim {self.unet.context_dim}"
            )

    @classmethod
    def v1(cls) -> "CCSRConfig":
        """The official CCSR v1 sizes (SD 2.1 UNet, ViT-H-14 text tower)."""
        return cls()

    @classmethod
    def tiny(cls) -> "CCSRConfig":
        """The packaged tiny test architecture (same as tests/fixtures/ccsr-tiny.yaml)."""
        return cls.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "ccsr-tiny.yaml")

    def replace(self, **changes: Any) -> "CCSRConfig":
        return replace(self, **changes)

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str | Path) -> "CCSRConfig":
        """Parse an official-format model YAML (``target: model.ccsr_stage2.ControlLDM``)."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CheckpointError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise CheckpointError(f"config {path} is not valid YAML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "config") -> "CCSRConfig":
        """Same as :meth:`from_yaml` for an already parsed mapping.

        Any bad or unsupported value is a CheckpointError naming ``source``."""
        try:
            return cls._from_mapping(data, source)
        except CheckpointError as exc:
            msg = str(exc)
            raise CheckpointError(msg if msg.startswith(source) else f"{source}: {msg}") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: bad value ({exc})") from None

    @classmethod
    def _from_mapping(cls, data: Any, source: str) -> "CCSRConfig":
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{source}: expected a mapping at the top level")
        params = data.get("params", data)
        if not isinstance(params, Mapping):
            raise CheckpointError(f"{source}: 'params' must be a mapping")

        def section(name: str) -> Mapping[str, Any]:
            sec = params.get(name)
            if not isinstance(sec, Mapping):
                raise CheckpointError(f"{source}: missing section params.{name}")
            inner = sec.get("params", {})
            return inner if isinstance(inner, Mapping) else {}

        unet_p = section("unet_config")
        ctrl_p = section("control_stage_config")
        unet = _unet_from_params(unet_p, hint_channels=int(ctrl_p.get("hint_channels", 4)), source=source)
        ctrl = _unet_from_params(ctrl_p, hint_channels=int(ctrl_p.get("hint_channels", 4)), source=source)
        ctrl = replace(ctrl, out_channels=unet.out_channels)
        if ctrl != unet:
            raise CheckpointError(
                f"{source}: control_stage_config must have the same sizes as unet_config "
                f"(got {ctrl} vs {unet})"
            )

        first = section("first_stage_config")
        dd = first.get("ddconfig", {})
        if not isinstance(dd, Mapping):
            raise CheckpointError(f"{source}: first_stage_config.params.ddconfig must be a mapping")
        vae = VAEConfig(
            ch=int(dd.get("ch", 128)),
            ch_mult=tuple(dd.get("ch_mult", (1, 2, 4, 4))),
            num_res_blocks=int(dd.get("num_res_blocks", 2)),
            z_channels=int(dd.get("z_channels", 4)),
            embed_dim=int(first.get("embed_dim", 4)),
            in_channels=int(dd.get("in_channels", 3)),
            out_ch=int(dd.get("out_ch", 3)),
            resolution=int(dd.get("resolution", 256)),
            attn_resolutions=tuple(dd.get("attn_resolutions", ()) or ()),
        )
        if not dd.get("double_z", True):
            raise CheckpointError(f"{source}: only double_z: true VAEs are supported")

        cond = section("cond_stage_config")
        layer = cond.get("layer", "penultimate")
        if layer != "penultimate":
            raise CheckpointError(f"{source}: cond_stage_config.params.layer must be 'penultimate', got {layer!r}")
        width = int(cond.get("width", 1024))
        text = TextConfig(
            width=width,
            layers=int(cond.get("layers", 24)),
            heads=int(cond.get("heads", width // HEAD_WIDTH)),
            context_length=int(cond.get("max_length", 77)),
            vocab_size=int(cond.get("vocab_size", 49408)),
            embed_dim=int(cond.get("embed_dim", width)),
        )
        return cls(
            unet=unet,
            vae=vae,
            text=text,
            scale_factor=float(params.get("scale_factor", 0.18215)),
            linear_start=float(params.get("linear_start", 0.00085)),
            linear_end=float(params.get("linear_end", 0.012)),
            timesteps=int(params.get("timesteps", 1000)),
            t_max=float(params.get("t_max", 0.6667)),
            t_min=float(params.get("t_min", 0.3333)),
            image_size=int(params.get("image_size", 64)),
            latent_channels=int(params.get("channels", 4)),
        )

    # ------------------------------------------------------------ state dict
    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "CCSRConfig":
        """Infer every size from tensor shapes of an official-layout state dict.

        Head width is assumed to be 64 (SD 2.x); schedule values and t_max/t_min
        are not stored in the weights and keep their v1 defaults.
        """
        try:
            return _infer(sd)
        except KeyError as exc:
            raise CheckpointError(
                f"cannot infer the architecture: key {exc.args[0]!r} is missing (not a CCSR v1 checkpoint?)"
            ) from None


def _unet_from_params(p: Mapping[str, Any], hint_channels: int, source: str) -> UNetConfig:
    if not p.get("use_spatial_transformer", True):
        raise CheckpointError(f"{source}: use_spatial_transformer must be true")
    head = int(p.get("num_head_channels", HEAD_WIDTH))
    if head <= 0:
        raise CheckpointError(f"{source}: num_head_channels must be set (SD 2.x uses 64)")
    if p.get("legacy", False):
        raise CheckpointError(f"{source}: legacy: true is not supported (SD 2.x uses legacy: false)")
    depth = p.get("transformer_depth", 1)
    if isinstance(depth, (list, tuple)):
        if len(set(depth)) != 1:
            raise CheckpointError(f"{source}: per-level transformer_depth is not supported")
        depth = depth[0]
    return UNetConfig(
        in_channels=int(p.get("in_channels", 4)),
        out_channels=int(p.get("out_channels", 4)),
        hint_channels=hint_channels,
        model_channels=int(p.get("model_channels", 320)),
        channel_mult=tuple(p.get("channel_mult", (1, 2, 4, 4))),
        num_res_blocks=int(p.get("num_res_blocks", 2)),
        attention_resolutions=tuple(p.get("attention_resolutions", (4, 2, 1))),
        num_head_channels=head,
        transformer_depth=int(depth),
        context_dim=int(p.get("context_dim", 1024)),
        use_linear_in_transformer=bool(p.get("use_linear_in_transformer", True)),
    )


def _indices(sd: Mapping[str, Any], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd for m in [rx.match(k)] if m}
    return sorted(found)


def _infer(sd: Mapping[str, Any]) -> CCSRConfig:
    u = "model.diffusion_model."
    w0 = sd[u + "input_blocks.0.0.weight"]
    mc, in_ch = int(w0.shape[0]), int(w0.shape[1])
    out_ch = int(sd[u + "out.2.weight"].shape[0])
    hint = int(sd["control_model.input_blocks.0.0.weight"].shape[1]) - in_ch

    blocks = _indices(sd, re.escape(u) + r"input_blocks\.(\d+)\.")
    levels: list[list[int]] = [[]]
    for k in blocks[1:]:
        if u + f"input_blocks.{k}.0.op.weight" in sd:
            levels.append([])
        else:
            levels[-1].append(k)
    nrb = len(levels[0])
    mult = [int(sd[u + f"input_blocks.{lv[0]}.0.out_layers.3.weight"].shape[0]) // mc for lv in levels]
    attn = [2**i for i, lv in enumerate(levels) if u + f"input_blocks.{lv[0]}.1.proj_in.weight" in sd]
    probe = f"{u}middle_block.1."
    depth = len(_indices(sd, re.escape(probe) + r"transformer_blocks\.(\d+)\."))
    ctx_dim = int(sd[probe + "transformer_blocks.0.attn2.to_k.weight"].shape[1])
    linear = sd[probe + "proj_in.weight"].ndim == 2
    unet = UNetConfig(
        in_channels=in_ch,
        out_channels=out_ch,
        hint_channels=hint,
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=nrb,
        attention_resolutions=tuple(attn),
        num_head_channels=HEAD_WIDTH,
        transformer_depth=depth,
        context_dim=ctx_dim,
        use_linear_in_transformer=linear,
    )

    e = "cond_encoder.encoder."
    conv_in = sd[e + "conv_in.weight"]
    ch = int(conv_in.shape[0])
    down = _indices(sd, re.escape(e) + r"down\.(\d+)\.")
    vmult = [int(sd[e + f"down.{i}.block.0.conv2.weight"].shape[0]) // ch for i in down]
    vnrb = len(_indices(sd, re.escape(e) + r"down\.0\.block\.(\d+)\."))
    if any(k.startswith(e + "down.") and ".attn." in k for k in sd):
        raise CheckpointError("VAE attention inside the down blocks (attn_resolutions) is not supported")
    vae = VAEConfig(
        ch=ch,
        ch_mult=tuple(vmult),
        num_res_blocks=vnrb,
        z_channels=int(sd[e + "conv_out.weight"].shape[0]) // 2,
        embed_dim=int(sd["cond_encoder.quant_conv.weight"].shape[0]) // 2,
        in_channels=int(conv_in.shape[1]),
        out_ch=int(sd["first_stage_model.decoder.conv_out.weight"].shape[0]),
    )

    t = "cond_stage_model.model."
    tok = sd[t + "token_embedding.weight"]
    width = int(tok.shape[1])
    text = TextConfig(
        width=width,
        layers=len(_indices(sd, re.escape(t) + r"transformer\.resblocks\.(\d+)\.")),
        heads=width // HEAD_WIDTH,
        context_length=int(sd[t + "positional_embedding"].shape[0]),
        vocab_size=int(tok.shape[0]),
        embed_dim=int(sd[t + "text_projection"].shape[1]),
    )
    scale = 0.18215
    if "scale_factor" in sd:
        scale = round(float(sd["scale_factor"]), 8)
    return CCSRConfig(unet=unet, vae=vae, text=text, scale_factor=scale, latent_channels=in_ch)
