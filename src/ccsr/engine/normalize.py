"""What every input image becomes before a model sees it.

One frame, upright (the EXIF orientation applied to the pixels), 8 bits a
channel, in one of four modes: ``RGB``, ``RGBA``, ``L`` (grey) or ``LA``
(grey with alpha), with its ICC colour profile when the profile describes
that mode's colour space. The models work on 8-bit RGB; keeping the mode
tells the output stage (:mod:`ccsr.apps.finish`) what to give back: grey
stays grey, transparency stays transparent.

Pillow only, no other import: the service's decode child
(:mod:`ccsr.service.decode_child`, one process per request) runs it, and so
does ``ccsr upscale`` on local files, so both see an image the same way.
"""

from __future__ import annotations

import io
from typing import Optional

from PIL import Image, ImageOps

#: The modes a normalised image has.
MODES = ("RGB", "RGBA", "L", "LA")
#: Modes holding more than 8 bits of grey (16-bit PNG and TIFF, 32-bit integer TIFF).
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: The ICC header's colour space (bytes 16-20) each mode's profile must have.
_ICC_SPACE = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY"}


def icc_space(icc: Optional[bytes]) -> Optional[bytes]:
    """The colour space an ICC profile describes (``b"RGB "``, ``b"GRAY"``,
    ``b"CMYK"``...), read from its header; None when there is no valid header."""
    if not icc or len(icc) < 128 or icc[36:40] != b"acsp":
        return None
    return bytes(icc[16:20])


def _grey_8bit(im: Image.Image) -> Image.Image:
    """16-bit grey to 8-bit, scaled (Pillow's own convert clips at 255: a
    16-bit photo would come back white)."""
    wide = im.convert("I")
    if not im.mode.startswith("I;16") and wide.getextrema()[1] <= 255:
        return wide.convert("L")  # an "I" image holding 8-bit values
    return wide.point(lambda v: v * (255 / 65535)).convert("L")


def _cmyk_to_rgb(im: Image.Image, icc: Optional[bytes]) -> Image.Image:
    """CMYK through its own profile to sRGB when it has one (print files), else Pillow's plain formula."""
    if icc_space(icc) == b"CMYK":
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile: fall back to the formula
            pass
    return im.convert("RGB")


def _to_mode(im: Image.Image, icc: Optional[bytes]) -> Image.Image:
    mode = im.mode
    if mode in MODES:
        return im
    if mode in _WIDE_GREY:
        return _grey_8bit(im)
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode in ("PA", "RGBa"):
        return im.convert("RGBA")
    if mode == "La":
        return im.convert("LA")
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc)
    return im.convert("RGB")  # RGBX, YCbCr, LAB, HSV, F ...


def normalize_image(im: Image.Image) -> Image.Image:
    """The loaded first frame of ``im`` as the models' input (module docstring).

    An alpha channel that is opaque everywhere is dropped (there is nothing to
    keep, and the output may then be any format). ``info`` keeps only the ICC
    profile, when it matches the mode: EXIF (camera, GPS) and the rest are not
    carried to the result."""
    icc = im.info.get("icc_profile")
    im = ImageOps.exif_transpose(im) or im
    im = _to_mode(im, icc)
    if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema() == (255, 255):
        im = im.convert(im.mode[:-1])
    keep = icc if icc_space(icc) == _ICC_SPACE[im.mode] else None
    im.info = {"icc_profile": keep} if keep else {}
    return im
