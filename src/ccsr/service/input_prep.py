"""Preparing a request's input for a worker, with the HTTP process never
holding decoded pixels.

1. fetch the bytes (data URI, our upload, or an SSRF-guarded download);
2. read the header only (format, size) and check it against
   ``max_input_pixels`` and the output the request asks for against
   ``max_output_pixels``: a refused input costs no decoding;
3. decode the first frame in a bounded child process
   (:mod:`ccsr.service.decode_proc`) that writes the PNG the worker reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ccsr.errors import InvalidParameter
from ccsr.jobs.scheduler import InputProblem, JobView
from ccsr.params import UpscaleParams, check_request
from ccsr.service.decode_proc import decode_to_png
from ccsr.service.fetch import load_input_bytes
from ccsr.service.images import probe_image
from ccsr.settings import Settings


def make_prepare(settings: Settings, files: Any):
    """Build ``prepare(view, dest)`` for the scheduler."""

    def check_and_decode(data: bytes, params: UpscaleParams, dest: str) -> None:
        header = probe_image(data, max_pixels=settings.max_input_pixels)
        check_request(params, header.width, header.height, settings.max_output_pixels)
        decode_to_png(data, dest, max_pixels=settings.max_input_pixels, memory_bytes=settings.decode_memory_bytes,
                      timeout=settings.decode_timeout)

    async def prepare(view: JobView, dest: str) -> None:
        params = UpscaleParams(**{k: v for k, v in view.input.items() if k != "image_url"})
        try:
            data = await load_input_bytes(view.input.get("image_url", ""), settings=settings, files=files)
            await asyncio.to_thread(check_and_decode, data, params, dest)
        except InvalidParameter as exc:  # InputError(field, message) and check_request's errors
            raise InputProblem(exc.field, exc.message) from None

    return prepare
