"""The ``fal-ai/ccsr`` app: CCSR v1 super-resolution, the hosted API's schema."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, Field

from ccsr.apps.base import App, FileInfo, Image, LogFn, Produced, ProgressFn, WeightsStatus, image_input_model
from ccsr.errors import OutOfMemory
from ccsr.models.ccsr_v1.params import UpscaleParams, batch_key, check_params, check_size
from ccsr.models.ccsr_v1.settings import CCSRv1Settings, channels_last_flag

if TYPE_CHECKING:
    import typer

CCSRInput = image_input_model(
    "CCSRInput", UpscaleParams, "Input of fal-ai/ccsr: the image URL and the upscaling parameters.",
    "https://storage.googleapis.com/falserverless/gallery/blue-bird.jpeg",
)


class CCSROutput(BaseModel):
    image: Image = Field(..., description="The generated image file info.")
    seed: int = Field(..., description="The seed used for the generation.")


class CCSRApp(App):
    app_id = "fal-ai/ccsr"
    title = "CCSR v1 super-resolution (diffusion upscaler)"
    Params = UpscaleParams
    Input = CCSRInput
    Output = CCSROutput
    name = "ccsr-v1"
    Settings = CCSRv1Settings

    def check(self, params: UpscaleParams) -> None:  # type: ignore[override]
        check_params(params)

    def check_image(self, params: UpscaleParams, width: int, height: int, settings: Any) -> None:  # type: ignore[override]
        check_size(params, width, height, settings.max_output_pixels)

    def render(self, fields: dict, file: FileInfo) -> dict:
        return {"image": {**file.model_dump(), "width": fields["width"], "height": fields["height"]},
                "seed": fields["seed"]}

    def summary(self, fields: dict) -> str:
        return f"output {fields['width']}x{fields['height']}, seed {fields['seed']}"

    def weights_status(self, section: CCSRv1Settings) -> WeightsStatus:  # type: ignore[override]
        from ccsr.models.ccsr_v1 import weights

        path = weights.resolve(section.weights)  # header reads only: no torch
        return WeightsStatus(str(path), weights.is_random(path),
                             "It was written by `ccsr weights random`; `ccsr weights download` gets the official weights.")

    def register_cli(self, cli: "typer.Typer") -> None:
        from ccsr.models.ccsr_v1.cli import register

        register(cli)

    def download_weights(self, name: Optional[str], *, dest: Optional[Path], force: bool, timeout: Optional[float],
                         url: Optional[str]) -> Path:
        from ccsr.models.ccsr_v1 import weights

        return weights.download(cache_dir=dest, force=force, **({"timeout": timeout} if timeout else {}))

    def write_random_weights(self, output: Path, *, seed: int, dtype: str, arch: str, config: Optional[Path]) -> str:
        from ccsr.models.ccsr_v1.cli import write_random

        return write_random(output, seed=seed, dtype=dtype, arch=arch, config=config)

    def load_engine(self, settings: dict, device: str) -> Any:
        from ccsr.models.ccsr_v1.engine import CCSRUpscaler

        own = self.section(settings)
        dtype = settings.get("dtype")
        return CCSRUpscaler.from_checkpoint(
            own.weights,
            config=own.config,
            device=device,
            dtype=None if dtype in (None, "auto") else dtype,
            tile_batch_size=own.tile_batch_size,
            max_output_pixels=int(settings.get("max_output_pixels") or 4096 * 4096),
            auto_memory=own.auto_memory,
            memory_budget=own.memory_budget,
            compile=own.compile,
            channels_last=channels_last_flag(own.channels_last),
            batch_size=int(settings.get("batch_size") or 1),
            tune_malloc=bool(settings.get("tune_malloc", True)),
            winograd=bool(settings.get("winograd", True)),
            fused_upsample=settings.get("fused_upsample", "auto"), onednn_linear=settings.get("onednn_linear", "auto"),
        )

    def run(self, engine: Any, image: Any, params: UpscaleParams, *, progress: ProgressFn,  # type: ignore[override]
            cancel: threading.Event, log: LogFn) -> Produced:
        try:
            result = engine.run(image, params, progress=progress, cancel=cancel, log=log)
        except OutOfMemory as exc:
            if params.tile_vae:
                raise
            # Decoding the full image at once is the usual culprit: tiled VAE may fit.
            log(f"out of memory ({exc}); retrying with tile_vae=true", "WARN")
            params = params.model_copy(update={"tile_vae": True})
            result = engine.run(image, params, progress=progress, cancel=cancel, log=log)
        return _produced(result)

    def batch_key(self, params: UpscaleParams, width: int, height: int) -> Any:  # type: ignore[override]
        return batch_key(params, width, height)

    def run_batch(self, engine: Any, images: list, params: list, *, progress: ProgressFn,  # type: ignore[override]
                  cancel: Any, log: LogFn) -> list[Produced]:
        # An out-of-memory error propagates: the worker then runs the requests one by
        # one, each with run()'s own retry.
        results = engine.run_batch(images, params, progress=progress, cancel=cancel, log=log)
        return [_produced(r) for r in results]

    def oom_advice(self, params: UpscaleParams, detail: str) -> str:  # type: ignore[override]
        return (
            f"The device ran out of memory ({detail}). Lower the memory need: set tile_vae=true "
            f"(with smaller tile_vae_decoder_size/tile_vae_encoder_size, now {params.tile_vae_decoder_size}/"
            f"{params.tile_vae_encoder_size}), use tile_diffusion='mix' or 'gaussian' with a smaller "
            f"tile_diffusion_size (now {params.tile_diffusion_size}), lower scale (now {params.scale}) "
            f"or send a smaller image; on the server, lower tile_batch_size or use dtype fp16."
        )


def _produced(result: Any) -> Produced:
    out = result.image
    fields = {"seed": int(result.seed), "width": out.width, "height": out.height}
    return Produced.of_image(out, fields, getattr(result, "timings", None))
