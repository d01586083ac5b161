"""Decoding untrusted image bytes safely.

The pixel count is read from the header (``Image.open`` is lazy) and checked
against ``max_input_pixels`` *before* any pixel data is decoded, so a small
file that declares a huge canvas (a decompression bomb) costs nothing. Only
common raster formats are parsed: Pillow's other plugins (EPS calls
Ghostscript, for one) never see request data.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Optional

from PIL import Image, UnidentifiedImageError

from ccsr.engine.normalize import normalize_image
from ccsr.errors import InvalidParameter


class InputError(InvalidParameter):
    """A request input (an image URL, a data URI, a webhook URL) is unusable.

    A subclass of :class:`InvalidParameter`, so the service answers it the
    same way: HTTP 422 with ``field`` in ``loc`` and ``message`` in ``msg``.
    """


_WANTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


def allowed_formats() -> tuple[str, ...]:
    """The formats this Pillow build can open among those we accept."""
    Image.init()
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding any pixel."""

    width: int
    height: int
    format: str
    frames: int  # 1, or more for animated/multi-page (counted only where the header says so)


def probe_image(data: "bytes | str", *, max_pixels: int, field: str = "image_url") -> ImageHeader:
    """Read and check an image's header (bytes, or a file path): format among
    those accepted, at least one pixel, at most ``max_pixels``. No pixel data
    is decoded, so this is cheap whatever the header claims."""
    formats = allowed_formats()
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    if isinstance(data, (bytes, bytearray)) and not data:
        raise InputError(field, "the image is empty (0 bytes).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(source, formats=formats) as im:
                width, height, fmt = im.size[0], im.size[1], im.format or "?"
                # Cheap where the header carries it (TIFF/GIF compute it by walking frames: skipped).
                frames = int(getattr(im, "n_frames", 1)) if fmt in ("PNG", "WEBP", "MPO", "AVIF") else 1
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_many_pixels(field, int(found.group(1)) if found else None, max_pixels) from None
        except UnidentifiedImageError:
            raise InputError(field, "is not an image in a supported format (" + ", ".join(formats) + ").") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise InputError(field, f"the image could not be read (corrupt header: {exc}).") from None
    if width < 1 or height < 1:
        raise InputError(field, f"the image has no pixels ({width}x{height}).")
    if width * height > max_pixels:
        raise _too_many_pixels(field, width * height, max_pixels, (width, height))
    return ImageHeader(width, height, fmt, frames)


def decode_image(data: bytes, *, max_pixels: int, field: str = "image_url") -> Image.Image:
    """Bytes -> RGB image, or :class:`InputError` naming ``field`` and the limit.

    EXIF orientation is applied so the image is upscaled the way viewers
    show it; animated formats contribute their first frame.
    """
    if not data:
        raise InputError(field, "the image is empty (0 bytes).")
    formats = allowed_formats()
    with warnings.catch_warnings():
        # Pillow warns above its own limit; our limit is checked explicitly.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=formats)
        except Image.DecompressionBombError as exc:
            # Far over Pillow's own limit: its message carries the pixel count.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_many_pixels(field, int(found.group(1)) if found else None, max_pixels) from None
        except UnidentifiedImageError:
            raise InputError(
                field,
                "is not an image in a supported format (" + ", ".join(formats) + ").",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            raise InputError(field, f"the image could not be read (corrupt header: {exc}).") from None

        width, height = im.size
        if width < 1 or height < 1:
            raise InputError(field, f"the image has no pixels ({width}x{height}).")
        if width * height > max_pixels:
            raise _too_many_pixels(field, width * height, max_pixels, (width, height))
        try:
            im.seek(0)
            im.load()
            return normalize_image(im).convert("RGB")
        except Image.DecompressionBombError:
            raise _too_many_pixels(field, width * height, max_pixels, (width, height)) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError) as exc:
            raise InputError(field, f"the image is truncated or corrupt ({exc}).") from None


def _too_many_pixels(
    field: str, pixels: Optional[int], limit: int, size: Optional[tuple[int, int]] = None
) -> InputError:
    if size:
        what = f"{size[0]}x{size[1]} = {pixels} pixels"
    elif pixels:
        what = f"{pixels} pixels"
    else:
        what = "larger than the decoder allows"
    return InputError(
        field, f"the image is {what}; the limit is {limit} pixels (setting max_input_pixels)."
    )
