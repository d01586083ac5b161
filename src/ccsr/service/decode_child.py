"""The child side of :mod:`ccsr.service.decode_proc`, run as a script
(``python -I decode_child.py DEST MAX_PIXELS FORMATS``).

It imports Pillow and :mod:`ccsr.engine.normalize` (Pillow only) but not
the rest of the package (whose import costs several times Pillow's), because
it starts once per request. Reads the image on stdin, decodes the first
frame, normalises it (EXIF orientation applied; 8-bit RGB, RGBA, grey or grey
with alpha; the ICC profile kept) and writes a PNG to DEST; prints one JSON
line: ``{"width", "height", "mode"}`` or ``{"message"}``. Memory and CPU
limits are set by the parent.
"""

import io
import json
import os
import sys


def _package_root() -> str:
    """The folder holding the ``ccsr`` package this script belongs to
    (``python -I`` puts neither it nor PYTHONPATH on sys.path)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(dest: str, max_pixels: int, formats: list) -> int:
    from PIL import Image

    sys.path.insert(0, _package_root())
    from ccsr.engine.normalize import normalize_image

    Image.MAX_IMAGE_PIXELS = max_pixels  # a second line of defence: the parent read the header already
    data = sys.stdin.buffer.read()
    try:
        im = Image.open(io.BytesIO(data), formats=formats)
        im.seek(0)  # first frame / page only; the others are never decoded
        im.load()
        im = normalize_image(im)
    except MemoryError:
        print(json.dumps({"message": "memory"}))
        return 4
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        print(json.dumps({"message": f"the image is truncated or corrupt ({type(exc).__name__}: {exc})."}))
        return 3
    del data
    tmp = dest + ".part"
    im.save(tmp, format="PNG", compress_level=0, icc_profile=im.info.get("icc_profile"))
    os.replace(tmp, dest)
    print(json.dumps({"width": im.width, "height": im.height, "mode": im.mode}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")))
