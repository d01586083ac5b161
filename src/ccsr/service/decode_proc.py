"""Decoding request images in a short-lived child process with bounded memory.

Pixel decoding is where an image's cost is: a small file may decode to
hundreds of megabytes, and Python rarely gives such memory back to the
system, so decoding in the HTTP process left it hundreds of MB larger after
each large input. Here a child process (``python -m
ccsr.service.decode_proc``) decodes the first frame, applies the EXIF
orientation and writes the PNG the worker reads; its address space is capped
with ``RLIMIT_AS`` (``decode_memory_bytes``) and its time with
``decode_timeout``. The child is :mod:`ccsr.service.decode_child`, run as a
script importing Pillow only, so it starts in about a tenth of a second. When it dies the request fails with a 422 naming the
limit, and the HTTP process never held the pixels.

Multi-page and animated inputs (GIF, APNG, WebP, TIFF, MPO) contribute their
first frame; other frames are never decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Optional

from ccsr.service.images import InputError, allowed_formats

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decode_child.py")

_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "SYSTEMROOT", "VIRTUAL_ENV")


def _limit_memory(memory_bytes: int, cpu_seconds: int):  # noqa: ANN202
    def apply() -> None:  # runs in the child between fork and exec
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    return apply


def decode_to_png(data: bytes, dest: str, *, max_pixels: int, memory_bytes: int, timeout: float,
                  field: str = "image_url") -> tuple[int, int]:
    """Decode ``data`` in a bounded child and write ``dest`` (PNG); returns
    (width, height), or raises :class:`InputError` naming ``field``."""
    preexec = _limit_memory(memory_bytes, int(timeout) + 1) if os.name == "posix" else None
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    try:
        proc = subprocess.run(
            [sys.executable, "-I", CHILD, dest, str(max_pixels), ",".join(allowed_formats())],
            input=data, capture_output=True, timeout=timeout, preexec_fn=preexec, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError(field, f"decoding the image took longer than {timeout:g} s (setting decode_timeout).") from None
    answer: Optional[dict] = None
    try:
        answer = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if proc.returncode == 0 and answer and "width" in answer:
        return int(answer["width"]), int(answer["height"])
    if answer and answer.get("message", "memory") != "memory":
        raise InputError(field, answer["message"])
    raise InputError(
        field,
        f"the image could not be decoded within {memory_bytes} bytes of memory (setting decode_memory_bytes) "
        f"or {timeout:g} s (setting decode_timeout).",
    )
