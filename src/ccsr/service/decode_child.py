"""The child side of :mod:`ccsr.service.decode_proc`, run as a script
(``python -I decode_child.py DEST MAX_PIXELS FORMATS``).

It imports Pillow only, not the ccsr package (whose import costs several
times Pillow's), because it starts once per request. Reads the image on
stdin, decodes the first frame, applies the EXIF orientation, converts to
RGB and writes a PNG to DEST; prints one JSON line: ``{"width", "height"}``
or ``{"message"}``. Memory and CPU limits are set by the parent.
"""

import io
import json
import os
import sys


def main(dest: str, max_pixels: int, formats: list) -> int:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = max_pixels  # a second line of defence: the parent read the header already
    data = sys.stdin.buffer.read()
    try:
        im = Image.open(io.BytesIO(data), formats=formats)
        im.seek(0)  # first frame / page only; the others are never decoded
        im.load()
        im = ImageOps.exif_transpose(im) or im
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        im = im.convert("RGB")
    except MemoryError:
        print(json.dumps({"message": "memory"}))
        return 4
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        print(json.dumps({"message": f"the image is truncated or corrupt ({type(exc).__name__}: {exc})."}))
        return 3
    del data
    tmp = dest + ".part"
    im.save(tmp, format="PNG", compress_level=0)
    os.replace(tmp, dest)
    print(json.dumps({"width": im.width, "height": im.height}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")))
