"""Request parameters: one definition shared by the Python API, the CLI and
the HTTP schema, so the three can never disagree on names, defaults or enums.

Field names, types, defaults and enums are those of the hosted "fal-ai/ccsr"
API. Cross-field checks come in two halves, one per trust boundary of the
service: :func:`check_params` (no image needed: at submit) and
:func:`check_size` (where the image is decoded); :func:`check_request` runs both.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ccsr.engine.sizes import target_size  # noqa: F401 (re-exported: the engine and memory read it here)
from ccsr.errors import InvalidParameter

TileDiffusion = Literal["none", "mix", "gaussian"]
ColorFix = Literal["none", "wavelet", "adain"]

#: Largest seed accepted (the hosted API takes any int; torch seeds are 64-bit).
MAX_SEED = 2**63 - 1


class UpscaleParams(BaseModel):
    """Everything that changes the picture, except the image itself."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(2, gt=0, le=16, description="The scale of the output image. The higher the scale, the bigger the output image will be.")
    tile_diffusion: TileDiffusion = Field("none", description="If specified, a patch-based sampling strategy will be used for sampling.")
    tile_diffusion_size: int = Field(1024, ge=64, le=4096, description="Size of patch.")
    tile_diffusion_stride: int = Field(512, ge=8, le=4096, description="Stride of sliding patch.")
    tile_vae: bool = Field(False, description="If specified, a patch-based sampling strategy will be used for VAE decoding.")
    tile_vae_decoder_size: int = Field(226, ge=16, le=2048, description="Size of VAE patch.")
    tile_vae_encoder_size: int = Field(1024, ge=128, le=8192, description="Size of latent image")
    steps: int = Field(50, ge=2, le=1000, description="The number of steps to run the model for. The higher the number the better the quality and longer it will take to generate.")
    t_max: float = Field(0.6667, gt=0, le=1, description="The ending point of uniform sampling strategy.")
    t_min: float = Field(0.3333, ge=0, lt=1, description="The starting point of uniform sampling strategy.")
    color_fix_type: ColorFix = Field("adain", description="Type of color correction for samples.")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED, description="Seed for reproducibility. Different seeds will make slightly different results.")


def sampling_range(steps: int, t_max: float, t_min: float) -> tuple[int, int]:
    """(u, m): the truncated sampler's DDPM loop runs over spaced indices u-1 down to m.

    u = round(steps*t_max), m = round(steps*t_min), Python's round (half to
    even) as the reference; u - m < 1 means no sampling step at all.
    """
    return round(steps * t_max), round(steps * t_min)


#: Short side of the diffusion image when tiled diffusion is off (the model's native 512 px).
NATIVE_SIZE = 512


def diffusion_size(width: int, height: int, scale: float, min_short: int) -> tuple[int, int]:
    """Size of the diffusion image, computed without resizing anything (for limits):
    the output size, enlarged until its short side reaches ``min_short``, floored to 64."""
    w, h = target_size(width, height, scale)
    short = min(w, h)
    if short < min_short:
        r = min_short / short
        w, h = math.ceil(w * r), math.ceil(h * r)
    return w // 64 * 64, h // 64 * 64


def min_short_side(params: UpscaleParams) -> int:
    """The short side the diffusion image is enlarged to: the tile size when tiling, else 512."""
    return params.tile_diffusion_size if params.tile_diffusion != "none" else NATIVE_SIZE


def batch_key(params: UpscaleParams, width: int, height: int) -> tuple:
    """Requests with equal keys can share the network's batch: one input size and
    every field but the seed equal (each item draws its own seed's noise)."""
    return (width, height, tuple(sorted(params.model_dump(exclude={"seed"}).items())))


def check_params(params: UpscaleParams) -> None:
    """Cross-field rules that do not need the image (the first trust boundary:
    checked when a request is accepted, so an error comes back at submit).

    Raises :class:`InvalidParameter` naming the field at fault.
    """
    if params.t_min >= params.t_max:
        raise InvalidParameter("t_min", f"must be smaller than t_max ({params.t_max}), got {params.t_min}")
    n = params.steps
    u, m = sampling_range(n, params.t_max, params.t_min)
    if u - m < 1:
        raise InvalidParameter(
            "steps",
            f"{n} steps with t_max={params.t_max} and t_min={params.t_min} leave no sampling step "
            f"(round(steps*t_max) - round(steps*t_min) = {u - m}); use more steps or a wider t range",
        )
    if params.tile_diffusion != "none":
        if params.tile_diffusion_size % 8:
            raise InvalidParameter("tile_diffusion_size", f"must be a multiple of 8, got {params.tile_diffusion_size}")
        if params.tile_diffusion_stride % 8:
            raise InvalidParameter("tile_diffusion_stride", f"must be a multiple of 8, got {params.tile_diffusion_stride}")
        if params.tile_diffusion_stride > params.tile_diffusion_size:
            raise InvalidParameter(
                "tile_diffusion_stride",
                f"must not exceed tile_diffusion_size ({params.tile_diffusion_size}), got {params.tile_diffusion_stride}",
            )


def check_size(params: UpscaleParams, width: int, height: int, max_output_pixels: int) -> None:
    """Rules that need the input size (the second trust boundary: checked where
    the image has been decoded): the output and the diffusion image must fit
    ``max_output_pixels``. Raises :class:`InvalidParameter` naming the field."""
    if width < 1 or height < 1:
        raise InvalidParameter("image_url", f"image has no pixels ({width}x{height})")
    tw, th = target_size(width, height, params.scale)
    if tw * th > max_output_pixels:
        raise InvalidParameter(
            "scale",
            f"output {tw}x{th} = {tw * th} pixels exceeds the limit of {max_output_pixels} pixels "
            f"(setting max_output_pixels); lower the scale or the input size",
        )
    short = min_short_side(params)
    dw, dh = diffusion_size(width, height, params.scale, short)
    if dw * dh > max_output_pixels:
        raise InvalidParameter(
            "scale",
            f"the diffusion image would be {dw}x{dh} = {dw * dh} pixels (a very thin image is "
            f"enlarged so its short side reaches {short} px), over the limit of "
            f"{max_output_pixels} (setting max_output_pixels)",
        )


def check_request(params: UpscaleParams, width: int, height: int, max_output_pixels: int) -> None:
    """Both checks at once, for callers holding the image from the start (the
    Python API and ``ccsr upscale``). Raises :class:`InvalidParameter`."""
    check_params(params)
    check_size(params, width, height, max_output_pixels)
