"""The output stage every app gets: from a prepared input to the result file.

A model sees RGB; what users send and want back is more than that. Around
an app's :meth:`~ccsr.apps.base.App.run` (or :meth:`~ccsr.apps.base.App.run_batch`)
this module, one implementation for every app, used by the worker
(:mod:`ccsr.executors.worker`) and by ``ccsr upscale``:

1. :func:`source_of` splits the normalised input (:mod:`ccsr.engine.normalize`:
   RGB, RGBA, grey or grey with alpha, with its ICC profile) into the colour
   the model sees (RGB) and the alpha channel; a transparent input asked for
   as JPEG (no alpha) is flattened onto white first, so the model sees what
   the file will show;
2. the app runs on the colour;
3. :func:`finish` upscales the alpha to the output size (with the model where
   the app offers it, :meth:`~ccsr.apps.base.App.upscale_alpha`, else bicubic),
   attaches it, gives grey back as grey, and encodes the requested format with
   the input's ICC profile and, for PNG, a ``tEXt`` chunk ``ccsr`` holding the
   provenance (app, model, version, parameters with the seed used) unless the
   server's ``provenance`` setting is off. No EXIF is written: the orientation
   was applied to the pixels, so no stale orientation tag can turn the result.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Optional

from ccsr.apps.base import App, LogFn, Produced, ProgressFn
from ccsr.apps.output import OutputSpec

#: The PNG text chunk holding a result's provenance.
PROVENANCE_KEY = "ccsr"


@dataclasses.dataclass
class Source:
    """A prepared input split for a model: ``colour`` (RGB) is what it sees;
    ``alpha`` (L, input size) and ``grey`` say what the result gets back;
    ``icc`` is the input's colour profile."""

    colour: Any
    alpha: Any = None
    grey: bool = False
    icc: Optional[bytes] = None


def source_of(image: Any, spec: OutputSpec, log: Optional[LogFn] = None) -> Source:
    """Split a normalised input (see the module docstring) for ``spec``."""
    from ccsr.engine.images import ALPHA_FORMATS, flatten

    icc = image.info.get("icc_profile") or None
    grey = image.mode in ("L", "LA")
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    if alpha is not None and spec.format not in ALPHA_FORMATS:
        if log is not None:
            log(f"the input is transparent and {spec.format} has no alpha channel: flattened onto white "
                "(ask for png or webp to keep the transparency)", "WARN")
        image, alpha = flatten(image), None
    return Source(image.convert("RGB"), alpha, grey, icc)


def provenance(app: App, params: Any, fields: dict) -> str:
    """What reproduces a result: the app, the model, this package's version and
    the parameters, with the seed the run used (JSON)."""
    from importlib import metadata

    try:
        version = metadata.version("ccsr")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        version = "unknown"
    values = params.model_dump(mode="json") if hasattr(params, "model_dump") else dict(params or {})
    if "seed" in fields:
        values["seed"] = fields["seed"]
    return json.dumps({"app": app.app_id, "model": app.name, "version": version, "parameters": values},
                      separators=(",", ":"), sort_keys=True)


def _picture(out: Produced) -> Any:
    """The app's output picture (decoding it when the app returned bytes)."""
    if out.image is not None:
        return out.image
    from PIL import Image

    with Image.open(io.BytesIO(out.data)) as im:
        im.load()
        return im


def finish(app: App, engine: Any, source: Source, out: Produced, params: Any, spec: OutputSpec, *,
           cancel: Any, log: LogFn) -> Produced:
    """The result file of one run (module docstring, step 3)."""
    from ccsr.engine.images import CONTENT_TYPES, EXTENSIONS, encode_image, resize_alpha, with_alpha

    picture = _picture(out)
    alpha = None
    if source.alpha is not None:
        alpha = app.upscale_alpha(engine, source.alpha, picture.size, params, cancel=cancel, log=log)
        alpha = resize_alpha(source.alpha if alpha is None else alpha.convert("L"), picture.size)
    elif picture.mode in ("RGBA", "LA") and spec.format != "jpeg":
        alpha = picture.getchannel("A")  # an app making transparency of its own
    final = with_alpha(picture, alpha, source.grey)
    text = {PROVENANCE_KEY: provenance(app, params, out.fields)} if spec.provenance and spec.format == "png" else None
    data = encode_image(final, spec.format, icc=source.icc, text=text)
    fields = {**out.fields, "width": final.width, "height": final.height}
    return Produced(data, CONTENT_TYPES[spec.format], EXTENSIONS[spec.format], fields, out.timings)


def run_one(app: App, engine: Any, image: Any, params: Any, spec: OutputSpec, *, progress: ProgressFn,
            cancel: Any, log: LogFn) -> Produced:
    """One request from its prepared input to its result file."""
    source = source_of(image, spec, log)
    out = app.run(engine, source.colour, params, progress=progress, cancel=cancel, log=log)
    return finish(app, engine, source, out, params, spec, cancel=cancel, log=log)
