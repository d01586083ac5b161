"""Images in and out of the engines: PIL to a [0, 1] tensor, the alpha
channel beside a model, and encoding results by format (PNG, JPEG, WebP)
with their ICC profile and, for PNG, text chunks.

How each format is written, and why (docs/design.md, "Results"):

* **png**: lossless, OpenCV's encoder (about as fast as Pillow 13's and ~10x
  older Pillows' at 4096 px), with the ICC profile (``iCCP``) and text
  (``tEXt``) chunks added to its stream; grey with alpha (OpenCV cannot)
  through Pillow.
* **jpeg**: quality 95 with 4:4:4 chroma (no subsampling). At 4:2:0, the
  usual default, a red/blue edge comes back with errors of ~180 of 255 on
  saturated colours; at 4:4:4 they stay under ~15, and quality 95 is what
  photographers export at (visually lossless, a fifth of the PNG's size).
* **webp**: lossless (VP8L). Lossy WebP is always 4:2:0 (the VP8 format has no
  4:4:4 and neither Pillow nor OpenCV expose libwebp's sharp-YUV), with the same
  colour bleeding as 4:2:0 JPEG; lossless keeps colours and alpha exact at
  about 30% below PNG's size. For the smallest files, ask for jpeg.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image

from ccsr.apps.output import CONTENT_TYPES, EXTENSIONS, SUFFIXES  # noqa: F401 (re-exported)
from ccsr.engine.normalize import icc_space

if TYPE_CHECKING:  # torch is imported where a tensor is made
    import torch

FORMATS = SUFFIXES  # the format of each file extension
#: The formats that can hold an alpha channel.
ALPHA_FORMATS = ("png", "webp")
JPEG_QUALITY = 95
#: What a transparent input is flattened onto when the output format has no alpha (JPEG).
FLATTEN_BACKGROUND = (255, 255, 255)


def to_tensor01(pil: Image.Image) -> "torch.Tensor":
    """[1, 3, H, W] float32 in [0, 1] (uint8 / 255 computed in float64, as the reference)."""
    import torch

    arr = np.asarray(pil.convert("RGB"), dtype=np.uint8) / 255.0
    return torch.from_numpy(arr).float().clamp_(0, 1).permute(2, 0, 1)[None].contiguous()


# --- alpha ------------------------------------------------------------------------
def flatten(im: Image.Image, background: tuple[int, int, int] = FLATTEN_BACKGROUND) -> Image.Image:
    """An RGBA or LA image composited onto ``background`` (RGB, or L for grey)."""
    if im.mode not in ("RGBA", "LA"):
        return im
    grey = im.mode == "LA"
    base = Image.new("RGB", im.size, background)
    base.paste(im.convert("RGB"), mask=im.getchannel("A"))
    return base.convert("L") if grey else base


def resize_alpha(alpha: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The alpha channel at ``size``, bicubic: as sharp an edge as Lanczos,
    without Lanczos' ringing, which leaves a faint halo (alpha ~8 of 255) a few
    pixels outside every hard edge of a cut-out."""
    return alpha if alpha.size == size else alpha.resize(size, Image.BICUBIC)


def with_alpha(colour: Image.Image, alpha: Optional[Image.Image], grey: bool) -> Image.Image:
    """The result in the input's kind: grey (L) or colour (RGB), with ``alpha`` attached when given."""
    out = colour.convert("L" if grey else "RGB")
    if alpha is not None:
        out.putalpha(alpha if alpha.size == out.size else resize_alpha(alpha, out.size))
    return out


# --- encoding ---------------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_chunks(png: bytes, icc: Optional[bytes] = None, text: Optional[dict[str, str]] = None) -> bytes:
    """``png`` with an ``iCCP`` chunk and ``tEXt`` chunks (Latin-1 keys and
    values) right after ``IHDR``: the profile must precede the image data, and
    text there is read with the header (Pillow's ``Image.open(...).info``)."""
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    extra = _chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)) if icc else b""
    extra += b"".join(_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1")) for k, v in (text or {}).items())
    return png[:ihdr_end] + extra + png[ihdr_end:]


def _encode_png(pil: Image.Image) -> bytes:
    import cv2

    arr = np.asarray(pil)
    if pil.mode == "RGB":
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif pil.mode == "RGBA":
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    elif pil.mode != "L":  # LA: OpenCV writes 1, 3 or 4 channels only
        out = io.BytesIO()
        pil.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV without the codec
        out = io.BytesIO()
        pil.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    return buf.tobytes()


def encode_image(pil: Image.Image, fmt: str = "png", quality: int = JPEG_QUALITY, *, icc: Optional[bytes] = None,
                 text: Optional[dict[str, str]] = None) -> bytes:
    """Encode ``pil`` (RGB, RGBA, L or LA) as ``fmt`` (png|jpeg|webp, see the
    module docstring) with the ICC profile ``icc``; ``text`` goes into PNG
    ``tEXt`` chunks (other formats ignore it). JPEG has no alpha: flatten first."""
    fmt = fmt.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"output_format: expected 'png', 'jpeg' or 'webp', got {fmt!r}")
    if fmt == "png":
        data = _encode_png(pil)
        return png_with_chunks(data, icc, text) if icc or text else data
    out = io.BytesIO()
    if fmt == "jpeg":
        pil.convert("L" if pil.mode in ("L", "LA") else "RGB").save(
            out, format="JPEG", quality=quality, subsampling=0, icc_profile=icc or None)
    else:
        if pil.mode in ("L", "LA"):  # WebP has no grey: RGB with R = G = B, and a grey profile no longer fits
            pil = pil.convert("RGBA" if pil.mode == "LA" else "RGB")
            icc = icc if icc_space(icc) == b"RGB " else None
        # Lossless; quality is the compression effort there (50: as small as 80 in half the time).
        pil.save(out, format="WEBP", lossless=True, quality=50, method=4, icc_profile=icc or "")
    return out.getvalue()


def save_image(pil: Image.Image, path: str | Path, quality: int = JPEG_QUALITY) -> Path:
    """Write by extension (.png, .jpg/.jpeg, .webp); no extension means PNG (".png" is added)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        path, suffix = path.with_suffix(".png"), ".png"
    if suffix not in FORMATS:
        raise ValueError(f"output path: unsupported extension {suffix!r}; use one of {sorted(FORMATS)}")
    path.write_bytes(encode_image(pil, FORMATS[suffix], quality))
    return path
