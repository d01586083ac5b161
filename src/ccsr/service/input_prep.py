"""Preparing a request's input for a worker, with the HTTP process never
holding decoded pixels.

1. the caller fetches the bytes (data URI, our upload, or an SSRF-guarded download);
2. :func:`decode_checked` reads the header only (format, size) and checks it
   against ``max_input_pixels`` and, through the app's check, the output the
   request asks for: a refused input costs no decoding;
3. it decodes the first frame in a bounded child process
   (:mod:`ccsr.service.decode_proc`) that writes the PNG the worker reads.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from ccsr.service.decode_proc import decode_to_png
from ccsr.service.images import probe_image
from ccsr.settings import Settings


def decode_checked(data: bytes, settings: Settings, check_size: Callable[[int, int], None]) -> bytes:
    """PNG bytes of the first frame of ``data``, after ``check_size(width, height)``
    passed on the header's size; raises ``InvalidParameter`` naming the field."""
    header = probe_image(data, max_pixels=settings.max_input_pixels)
    check_size(header.width, header.height)
    fd, dest = tempfile.mkstemp(suffix=".png", prefix="ccsr-decode-")
    os.close(fd)
    try:
        decode_to_png(data, dest, max_pixels=settings.max_input_pixels, memory_bytes=settings.decode_memory_bytes,
                      timeout=settings.decode_timeout)
        with open(dest, "rb") as f:
            return f.read()
    finally:
        os.unlink(dest)
