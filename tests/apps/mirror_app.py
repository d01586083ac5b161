"""A test-only app, registered only by the tests: ``ccsr-tests/mirror``.

It follows the app part of docs/design.md's "How to add a model" (step 5), with its own
id, schema (other fields than fal-ai/ccsr's, a cross-field rule and a size
limit of its own) and a trivial engine (mirror the image, pad it), so the
tests prove the seam: nothing in ``ccsr.service`` or ``ccsr.jobs`` names it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ccsr.apps.base import App, FileInfo, Image, LogFn, Produced, ProgressFn, image_input_model
from ccsr.errors import Cancelled, InvalidParameter

#: The largest input side the mirror app takes (its image-time check).
MAX_SIDE = 256


# 1. The engine's parameters, typed.
class MirrorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    axis: Literal["horizontal", "vertical"] = Field("horizontal", description="Which way to mirror.")
    pad: int = Field(0, ge=0, le=32, description="Border added around the result, in pixels.")
    pad_color: Optional[str] = Field(None, description="Colour of the border, e.g. '#ff0000' (needs pad > 0).")
    steps: int = Field(3, ge=1, le=1000, description="Fake progress steps.")
    step_seconds: float = Field(0.01, ge=0, le=2, description="Seconds per fake step.")


# 2. The HTTP input (image_url, the parameters, and the output fields every app has:
#    output_format, here restricted to png and jpeg, and sync_mode) and the output.
MirrorInput = image_input_model("MirrorInput", MirrorParams, "Input of ccsr-tests/mirror.", "https://example.com/a.png",
                                output_formats=("png", "jpeg"))


class MirrorOutput(BaseModel):
    image: Image
    axis: str = Field(..., description="The axis the image was mirrored about.")


# 3. The engine: built once per worker process by App.load_engine.
class MirrorEngine:
    def __init__(self, device: str = "cpu"):
        self.device = device

    def mirror(self, image: Any, p: MirrorParams, progress: ProgressFn, cancel: threading.Event) -> Any:
        from PIL import ImageOps

        for i in range(p.steps):
            if cancel.is_set():
                raise Cancelled("cancelled")
            time.sleep(p.step_seconds)
            progress(i + 1, p.steps)
        out = ImageOps.mirror(image) if p.axis == "horizontal" else ImageOps.flip(image)
        if p.pad:
            out = ImageOps.expand(out, border=p.pad, fill=p.pad_color or "black")
        return out


# 4. The app.
class MirrorApp(App):
    app_id = "ccsr-tests/mirror"
    name = "mirror"
    title = "Mirror (test app)"
    Params = MirrorParams
    Input = MirrorInput
    Output = MirrorOutput

    def check(self, params: MirrorParams) -> None:  # type: ignore[override]
        if params.pad_color is not None and params.pad == 0:
            raise InvalidParameter("pad_color", "needs pad > 0 (there is no border to colour)")

    def check_image(self, params: MirrorParams, width: int, height: int, settings: Any) -> None:  # type: ignore[override]
        if max(width, height) > MAX_SIDE:
            raise InvalidParameter("image_url", f"image is {width}x{height}; the mirror app takes at most {MAX_SIDE} px a side")

    def render(self, fields: dict, file: FileInfo) -> dict:
        return {"image": {**file.model_dump(), "width": fields["width"], "height": fields["height"]},
                "axis": fields["axis"]}

    def load_engine(self, settings: dict, device: str) -> MirrorEngine:
        return MirrorEngine(device)

    def run(self, engine: MirrorEngine, image: Any, params: MirrorParams, *, progress: ProgressFn,  # type: ignore[override]
            cancel: threading.Event, log: LogFn) -> Produced:
        log(f"mirroring {image.width}x{image.height} about the {params.axis} axis")
        out = engine.mirror(image, params, progress, cancel)
        fields = {"width": out.width, "height": out.height, "axis": params.axis}
        return Produced.of_image(out, fields)
