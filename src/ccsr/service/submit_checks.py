"""Checks of a submitted input that need no network: done at submit, so a
request that can never run is refused with a 422 at once instead of being
queued, stored and failed later.

For a ``data:`` URI (the only input carried in the body itself): its length
against ``max_data_uri_bytes``, its base64, and its image header (format,
pixel count against ``max_input_pixels``, and the output size the request
asks for against ``max_output_pixels``). No pixel is decoded here. Remote
and uploaded inputs are checked the same way when they are fetched.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from ccsr.service.fetch import decode_data_uri
from ccsr.service.images import ImageHeader, InputError, probe_image
from ccsr.settings import Settings


def check_data_uri(uri: str, check_size: Callable[[int, int], None], settings: Settings,
                   field: str = "image_url") -> tuple[ImageHeader, bytes, str]:
    """Size, encoding and image header of a data URI, and the output it would
    make; :class:`InputError` (a 422 on ``field``) otherwise. Returns the
    header, the decoded bytes and the URI's media type."""
    data, media = decode_data_uri(uri, max_bytes=settings.max_data_uri_bytes, field=field)
    header = probe_image(data, max_pixels=settings.max_input_pixels, field=field)
    check_size(header.width, header.height)  # the app's check of the output this size makes
    return header, data, media


async def check_submitted_input(inp: Any, check_size: Callable[[int, int], None],
                                settings: Settings) -> Optional[tuple[bytes, str]]:
    """Raise :class:`InvalidParameter` (answered 422 by the app's handler) when
    the input can be refused without fetching anything. For a data URI,
    returns its decoded bytes and media type (the caller stores them in the
    blob store instead of the job row); None for a URL."""
    url = getattr(inp, "image_url", "")
    if isinstance(url, str) and url[:5].lower() == "data:":
        if len(url) > settings.max_data_uri_bytes:  # cheap, before a thread hop
            raise InputError(
                "image_url",
                f"data URI is {len(url)} bytes; the limit is {settings.max_data_uri_bytes} bytes "
                "(setting max_data_uri_bytes). Upload the file and pass its URL instead.",
            )
        _header, data, media = await asyncio.to_thread(check_data_uri, url, check_size, settings)
        return data, media
    return None
