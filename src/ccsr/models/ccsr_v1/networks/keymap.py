"""The official CCSR key layout, generated from a config.

One list of :class:`Entry` rules describes every tensor of an official
checkpoint: its key, its shape, where it goes in our diffusers-based modules
and how it is converted on the way. The same list drives loading (official ->
diffusers), writing random checkpoints (shapes and init kinds) and
validation (expected keys and shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ccsr.models.ccsr_v1.networks.config import CCSRConfig, UNetConfig, VAEConfig

# Conversions between an official tensor and its target(s).
COPY = "copy"  # same tensor
CONV1X1 = "conv1x1"  # official [C, C, 1, 1] conv weight -> diffusers [C, C] linear weight
SPLIT_IN = "split_in"  # ControlNet first conv over cat[x, hint] -> conv_in + cond conv

# Init kinds, for random weights.
WEIGHT, BIAS, NORM_W, NORM_B, ZERO_W, EMBED, POS, SCALE = (
    "weight", "bias", "norm_w", "norm_b", "zero_w", "embed", "pos", "scale",
)

PREFIX_UNET = "model.diffusion_model."
PREFIX_CONTROL = "control_model."
PREFIX_VAE = "first_stage_model."
PREFIX_COND = "cond_encoder."
PREFIX_TEXT = "cond_stage_model.model."

# Buffers a Lightning checkpoint carries besides the weights (noise schedule etc.).
SCHEDULE_BUFFERS = frozenset(
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights", "scale_factor",
        "cond_ids",
    }
)
IGNORED_PREFIXES = ("decoder_loss.", "model_ema.")


def is_ignorable(key: str) -> bool:
    """Training-only or schedule keys that may be in a file and are never needed."""
    if key.startswith(IGNORED_PREFIXES):
        return True
    base = key[: -len("_inter")] if key.endswith("_inter") else key
    return base in SCHEDULE_BUFFERS


@dataclass(frozen=True)
class Entry:
    """One official tensor: key, shape, destination and init kind.

    ``module`` is "unet", "controlnet", "vae", "text", or None for tensors that
    are expected in a checkpoint but not needed at inference (the VAE's own
    encoder, the text tower's last block and projection).
    """

    key: str
    shape: tuple[int, ...]
    module: str | None
    target: str | None
    op: str = COPY
    init: str = WEIGHT


class _Builder:
    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, key, shape, module, target, op=COPY, init=WEIGHT) -> None:
        self.entries.append(Entry(key, tuple(int(s) for s in shape), module, target, op, init))

    def param(self, ko, kd, module, wshape, bias=True, init=WEIGHT, op=COPY) -> None:
        """A conv/linear layer: weight (+ bias)."""
        self.add(ko + ".weight", wshape, module, None if kd is None else kd + ".weight", op, init)
        if bias:
            self.add(ko + ".bias", wshape[:1], module, None if kd is None else kd + ".bias", COPY, BIAS)

    def norm(self, ko, kd, module, c) -> None:
        self.add(ko + ".weight", (c,), module, None if kd is None else kd + ".weight", COPY, NORM_W)
        self.add(ko + ".bias", (c,), module, None if kd is None else kd + ".bias", COPY, NORM_B)


# ---------------------------------------------------------------- UNet side
def _resblock(b: _Builder, po: str, pd: str, m: str, cin: int, cout: int, temb: int) -> None:
    b.norm(po + "in_layers.0", pd + "norm1", m, cin)
    b.param(po + "in_layers.2", pd + "conv1", m, (cout, cin, 3, 3))
    b.param(po + "emb_layers.1", pd + "time_emb_proj", m, (cout, temb))
    b.norm(po + "out_layers.0", pd + "norm2", m, cout)
    b.param(po + "out_layers.3", pd + "conv2", m, (cout, cout, 3, 3), init=ZERO_W)
    if cin != cout:
        b.param(po + "skip_connection", pd + "conv_shortcut", m, (cout, cin, 1, 1))


def _transformer(b: _Builder, po: str, pd: str, m: str, ch: int, u: UNetConfig) -> None:
    proj = (ch, ch) if u.use_linear_in_transformer else (ch, ch, 1, 1)
    b.norm(po + "norm", pd + "norm", m, ch)
    b.param(po + "proj_in", pd + "proj_in", m, proj)
    for d in range(u.transformer_depth):
        t = f"transformer_blocks.{d}."
        for attn, kv in (("attn1", ch), ("attn2", u.context_dim)):
            b.param(po + t + attn + ".to_q", pd + t + attn + ".to_q", m, (ch, ch), bias=False)
            b.param(po + t + attn + ".to_k", pd + t + attn + ".to_k", m, (ch, kv), bias=False)
            b.param(po + t + attn + ".to_v", pd + t + attn + ".to_v", m, (ch, kv), bias=False)
            b.param(po + t + attn + ".to_out.0", pd + t + attn + ".to_out.0", m, (ch, ch))
        b.param(po + t + "ff.net.0.proj", pd + t + "ff.net.0.proj", m, (ch * 8, ch))
        b.param(po + t + "ff.net.2", pd + t + "ff.net.2", m, (ch, ch * 4))
        for n in ("norm1", "norm2", "norm3"):
            b.norm(po + t + n, pd + t + n, m, ch)
    b.param(po + "proj_out", pd + "proj_out", m, proj, init=ZERO_W)


def _unet_encoder(b: _Builder, po: str, m: str, u: UNetConfig, control: bool) -> list[int]:
    """Time embedding, input blocks and middle block; returns the skip widths."""
    mc = u.model_channels
    temb = mc * 4
    b.param(po + "time_embed.0", "time_embedding.linear_1", m, (temb, mc))
    b.param(po + "time_embed.2", "time_embedding.linear_2", m, (temb, temb))
    if control:
        w = (mc, u.in_channels + u.hint_channels, 3, 3)
        b.add(po + "input_blocks.0.0.weight", w, m, "conv_in.weight", SPLIT_IN, WEIGHT)
        b.add(po + "input_blocks.0.0.bias", (mc,), m, "conv_in.bias", COPY, BIAS)
    else:
        b.param(po + "input_blocks.0.0", "conv_in", m, (mc, u.in_channels, 3, 3))
    skips = [mc]
    ch = mc
    k = 1
    last = len(u.channel_mult) - 1
    for level, cout in enumerate(u.level_channels):
        for j in range(u.num_res_blocks):
            _resblock(b, f"{po}input_blocks.{k}.0.", f"down_blocks.{level}.resnets.{j}.", m, ch, cout, temb)
            ch = cout
            if u.has_attention(level):
                _transformer(b, f"{po}input_blocks.{k}.1.", f"down_blocks.{level}.attentions.{j}.", m, ch, u)
            skips.append(ch)
            k += 1
        if level != last:
            b.param(f"{po}input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv", m, (ch, ch, 3, 3))
            skips.append(ch)
            k += 1
    _resblock(b, po + "middle_block.0.", "mid_block.resnets.0.", m, ch, ch, temb)
    _transformer(b, po + "middle_block.1.", "mid_block.attentions.0.", m, ch, u)
    _resblock(b, po + "middle_block.2.", "mid_block.resnets.1.", m, ch, ch, temb)
    return skips


def _unet(b: _Builder, u: UNetConfig) -> None:
    po, m = PREFIX_UNET, "unet"
    skips = _unet_encoder(b, po, m, u, control=False)
    temb = u.model_channels * 4
    ch = u.level_channels[-1]
    n = len(u.channel_mult)
    k = 0
    for level in reversed(range(n)):
        up = n - 1 - level
        cout = u.level_channels[level]
        for j in range(u.num_res_blocks + 1):
            skip = skips.pop()
            _resblock(b, f"{po}output_blocks.{k}.0.", f"up_blocks.{up}.resnets.{j}.", m, ch + skip, cout, temb)
            ch = cout
            sub = 1
            if u.has_attention(level):
                _transformer(b, f"{po}output_blocks.{k}.1.", f"up_blocks.{up}.attentions.{j}.", m, ch, u)
                sub = 2
            if level != 0 and j == u.num_res_blocks:
                b.param(f"{po}output_blocks.{k}.{sub}.conv", f"up_blocks.{up}.upsamplers.0.conv", m, (ch, ch, 3, 3))
            k += 1
    b.norm(po + "out.0", "conv_norm_out", m, ch)
    b.param(po + "out.2", "conv_out", m, (u.out_channels, ch, 3, 3), init=ZERO_W)


def _controlnet(b: _Builder, u: UNetConfig) -> None:
    po, m = PREFIX_CONTROL, "controlnet"
    skips = _unet_encoder(b, po, m, u, control=True)
    for i, c in enumerate(skips):
        b.param(f"{po}zero_convs.{i}.0", f"controlnet_down_blocks.{i}", m, (c, c, 1, 1), init=ZERO_W)
    c = u.level_channels[-1]
    b.param(po + "middle_block_out.0", "controlnet_mid_block", m, (c, c, 1, 1), init=ZERO_W)


# ----------------------------------------------------------------- VAE side
def _vae_res(b: _Builder, po: str, pd: str | None, m: str | None, cin: int, cout: int) -> None:
    j = (lambda s: None) if pd is None else (lambda s: pd + s)
    b.norm(po + "norm1", j("norm1"), m, cin)
    b.param(po + "conv1", j("conv1"), m, (cout, cin, 3, 3))
    b.norm(po + "norm2", j("norm2"), m, cout)
    b.param(po + "conv2", j("conv2"), m, (cout, cout, 3, 3), init=ZERO_W)
    if cin != cout:
        b.param(po + "nin_shortcut", j("conv_shortcut"), m, (cout, cin, 1, 1))


def _vae_mid(b: _Builder, po: str, pd: str | None, m: str | None, c: int) -> None:
    j = (lambda s: None) if pd is None else (lambda s: pd + s)
    _vae_res(b, po + "mid.block_1.", j("mid_block.resnets.0."), m, c, c)
    a, ad = po + "mid.attn_1.", j("mid_block.attentions.0.")
    jd = (lambda s: None) if ad is None else (lambda s: ad + s)
    b.norm(a + "norm", jd("group_norm"), m, c)
    for src, dst in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        b.param(a + src, jd(dst), m, (c, c, 1, 1), op=CONV1X1, init=ZERO_W if src == "proj_out" else WEIGHT)
    _vae_res(b, po + "mid.block_2.", j("mid_block.resnets.1."), m, c, c)


def _vae_encoder(b: _Builder, po: str, m: str | None, v: VAEConfig) -> None:
    """ldm Encoder under ``po``; target names only when ``m`` is set."""
    j = (lambda s: None) if m is None else (lambda s: "encoder." + s)
    b.param(po + "conv_in", j("conv_in"), m, (v.ch, v.in_channels, 3, 3))
    cin = v.ch
    last = len(v.ch_mult) - 1
    for i, mult in enumerate(v.ch_mult):
        cout = v.ch * mult
        for r in range(v.num_res_blocks):
            _vae_res(b, f"{po}down.{i}.block.{r}.", j(f"down_blocks.{i}.resnets.{r}."), m, cin, cout)
            cin = cout
        if i != last:
            b.param(f"{po}down.{i}.downsample.conv", j(f"down_blocks.{i}.downsamplers.0.conv"), m, (cin, cin, 3, 3))
    _vae_mid(b, po, j(""), m, cin)
    b.norm(po + "norm_out", j("conv_norm_out"), m, cin)
    b.param(po + "conv_out", j("conv_out"), m, (2 * v.z_channels, cin, 3, 3))


def _vae(b: _Builder, v: VAEConfig) -> None:
    _vae_encoder(b, PREFIX_VAE + "encoder.", None, v)
    b.param(PREFIX_VAE + "quant_conv", None, None, (2 * v.embed_dim, 2 * v.z_channels, 1, 1))
    _vae_encoder(b, PREFIX_COND + "encoder.", "vae", v)
    b.param(PREFIX_COND + "quant_conv", "quant_conv", "vae", (2 * v.embed_dim, 2 * v.z_channels, 1, 1))

    po, m = PREFIX_VAE + "decoder.", "vae"
    n = len(v.ch_mult)
    cin = v.ch * v.ch_mult[-1]
    b.param(po + "conv_in", "decoder.conv_in", m, (cin, v.z_channels, 3, 3))
    _vae_mid(b, po, "decoder.", m, cin)
    for i in reversed(range(n)):
        up = n - 1 - i
        cout = v.ch * v.ch_mult[i]
        for r in range(v.num_res_blocks + 1):
            _vae_res(b, f"{po}up.{i}.block.{r}.", f"decoder.up_blocks.{up}.resnets.{r}.", m, cin, cout)
            cin = cout
        if i != 0:
            b.param(f"{po}up.{i}.upsample.conv", f"decoder.up_blocks.{up}.upsamplers.0.conv", m, (cin, cin, 3, 3))
    b.norm(po + "norm_out", "decoder.conv_norm_out", m, cin)
    b.param(po + "conv_out", "decoder.conv_out", m, (v.out_ch, cin, 3, 3))
    b.param(PREFIX_VAE + "post_quant_conv", "post_quant_conv", m, (v.z_channels, v.embed_dim, 1, 1))


# ---------------------------------------------------------------- text side
def _text(b: _Builder, cfg: CCSRConfig) -> None:
    t = cfg.text
    w, po = t.width, PREFIX_TEXT
    b.add(po + "token_embedding.weight", (t.vocab_size, w), "text", "token_embedding.weight", init=EMBED)
    b.add(po + "positional_embedding", (t.context_length, w), "text", "positional_embedding", init=POS)
    for i in range(t.layers):
        used = i < t.layers - 1  # penultimate layer: the last block never runs
        m = "text" if used else None
        s = f"transformer.resblocks.{i}."
        j = (lambda x: s + x) if used else (lambda x: None)
        b.norm(po + s + "ln_1", j("ln_1"), m, w)
        b.add(po + s + "attn.in_proj_weight", (3 * w, w), m, j("attn.in_proj_weight"))
        b.add(po + s + "attn.in_proj_bias", (3 * w,), m, j("attn.in_proj_bias"), init=BIAS)
        b.param(po + s + "attn.out_proj", j("attn.out_proj"), m, (w, w))
        b.norm(po + s + "ln_2", j("ln_2"), m, w)
        b.param(po + s + "mlp.c_fc", j("mlp.c_fc"), m, (4 * w, w))
        b.param(po + s + "mlp.c_proj", j("mlp.c_proj"), m, (w, 4 * w))
    b.norm(po + "ln_final", "ln_final", "text", w)
    b.add(po + "text_projection", (w, t.embed_dim), None, None)
    b.add(po + "logit_scale", (), None, None, init=SCALE)


@lru_cache(maxsize=8)
def entries(cfg: CCSRConfig) -> tuple[Entry, ...]:
    """Every tensor of an official CCSR checkpoint for this config, in a stable order (cached per config)."""
    b = _Builder()
    _unet(b, cfg.unet)
    _controlnet(b, cfg.unet)
    _vae(b, cfg.vae)
    _text(b, cfg)
    return tuple(b.entries)
