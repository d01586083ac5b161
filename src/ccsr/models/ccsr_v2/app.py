"""The ``ccsr/v2`` app: CCSR-v2, one- and two-step diffusion super-resolution.

Its id is outside the ``fal-ai/`` namespace: no hosted endpoint serves CCSR-v2,
so the schema is ours (the official script's options under the service's
names, :mod:`ccsr.models.ccsr_v2.params`). A server that is not told its apps
(``CCSR_APPS``) serves it only when its weights folder is found, so a fresh
server without them does not start a worker that cannot load.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, Field

from ccsr.apps.base import App, FileInfo, Image, LogFn, Produced, ProgressFn, WeightsStatus, image_input_model
from ccsr.errors import CCSRError, OutOfMemory
from ccsr.models.ccsr_v2.params import V2Params, batch_key, check_params, check_size
from ccsr.models.ccsr_v2.settings import V2Settings

V2Input = image_input_model(
    "CCSRv2Input", V2Params, "Input of ccsr/v2: the image URL and the CCSR-v2 parameters.",
    "https://storage.googleapis.com/falserverless/gallery/blue-bird.jpeg",
)


class V2Output(BaseModel):
    image: Image = Field(..., description="The generated image file info.")
    seed: int = Field(..., description="The seed used for the generation.")


class V2App(App):
    app_id = "ccsr/v2"
    title = "CCSR-v2 super-resolution (one or two diffusion passes)"
    Params = V2Params
    Input = V2Input
    Output = V2Output
    name = "ccsr-v2"
    Settings = V2Settings

    def check(self, params: V2Params) -> None:  # type: ignore[override]
        check_params(params)

    def check_image(self, params: V2Params, width: int, height: int, settings: Any) -> None:  # type: ignore[override]
        check_size(params, width, height, settings.max_output_pixels)

    def render(self, fields: dict, file: FileInfo) -> dict:
        return {"image": {**file.model_dump(), "width": fields["width"], "height": fields["height"]},
                "seed": fields["seed"]}

    def summary(self, fields: dict) -> str:
        return f"output {fields['width']}x{fields['height']}, seed {fields['seed']}"

    def weights_status(self, section: V2Settings) -> WeightsStatus:  # type: ignore[override]
        from ccsr.models.ccsr_v2 import weights

        path = weights.resolve(section.weights)  # header reads only: no torch
        return WeightsStatus(str(path), weights.is_random(path),
                             "It was written by `ccsr weights random --model ccsr-v2`; "
                             "`ccsr weights download --model ccsr-v2` gets the real weights.")

    def serve_by_default(self, section: V2Settings) -> bool:  # type: ignore[override]
        try:
            self.weights_status(section)
        except CCSRError:
            return False
        return True

    def download_weights(self, name: Optional[str], *, dest: Optional[Path], force: bool, timeout: Optional[float],
                         url: Optional[str]) -> Path:
        from ccsr.models.ccsr_v2 import weights

        return weights.download(cache_dir=dest, force=force, endpoint=url, **({"timeout": timeout} if timeout else {}))

    def write_random_weights(self, output: Path, *, seed: int, dtype: str, arch: str, config: Optional[Path]) -> str:
        import torch

        from ccsr.models.ccsr_v2.random_weights import write_random_weights

        if config is not None:
            raise CCSRError("--config is CCSR v1's (an official-format YAML); for ccsr-v2 use --arch tiny|full")
        write_random_weights(output, arch=arch, seed=seed, dtype=getattr(torch, {"fp32": "float32", "fp16": "float16",
                                                                                 "bf16": "bfloat16"}[dtype]))
        size = sum(f.stat().st_size for f in Path(output).rglob("*") if f.is_file()) / 1e6
        return f"wrote {output}/ ({size:.1f} MB of RANDOM {arch} CCSR-v2 weights: for tests, demos and benchmarks only)"

    def convert_weights(self, source: Path, output: Path, *, dtype: str, allow_pickle: bool,
                        progress: Optional[Callable[[int, int], None]]) -> str:
        from ccsr.models.ccsr_v2 import weights

        out = weights.convert(source, output, dtype, allow_pickle=allow_pickle, progress=progress)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
        return (f"wrote {out}/ ({size:.1f} MB, {dtype}): load it with --weights {out} --dtype {dtype}, and the "
                "weights stay mapped from the files instead of being converted on every load")

    def load_engine(self, settings: dict, device: str) -> Any:
        from ccsr.models.ccsr_v2.engine import V2Upscaler

        own = self.section(settings)
        dtype = settings.get("dtype")
        return V2Upscaler.from_folder(
            own.weights, device=device, dtype=None if dtype in (None, "auto") else dtype,
            allow_pickle=own.allow_pickle, tune_malloc=bool(settings.get("tune_malloc", True)),
            winograd=bool(settings.get("winograd", True)),
            fused_upsample=settings.get("fused_upsample", "auto"), onednn_linear=settings.get("onednn_linear", "auto"),
            release_weights=own.release_weights, tile_batch_size=own.tile_batch_size, auto_memory=own.auto_memory,
            memory_budget=own.memory_budget,
            max_output_pixels=int(settings.get("max_output_pixels") or 4096 * 4096),
            batch_size=int(settings.get("batch_size") or 1),
        )

    def run(self, engine: Any, image: Any, params: V2Params, *, progress: ProgressFn,  # type: ignore[override]
            cancel: threading.Event, log: LogFn) -> Produced:
        try:
            result = engine.run(image, params, progress=progress, cancel=cancel, log=log)
        except OutOfMemory as exc:
            if params.tile_vae:
                raise
            log(f"out of memory ({exc}); retrying with tile_vae=true", "WARN")
            result = engine.run(image, params.model_copy(update={"tile_vae": True}), progress=progress, cancel=cancel, log=log)
        return _produced(result)

    def batch_key(self, params: V2Params, width: int, height: int) -> Any:  # type: ignore[override]
        return batch_key(params, width, height)

    def run_batch(self, engine: Any, images: list, params: list, *, progress: ProgressFn,  # type: ignore[override]
                  cancel: Any, log: LogFn) -> list[Produced]:
        return [_produced(r) for r in engine.run_batch(images, params, progress=progress, cancel=cancel, log=log)]

    def oom_advice(self, params: V2Params, detail: str) -> str:  # type: ignore[override]
        return (f"The device ran out of memory ({detail}). Set tile_vae=true (smaller tile_vae_decoder_size, now "
                f"{params.tile_vae_decoder_size}), tile_diffusion='gaussian' with a smaller tile_diffusion_size (now "
                f"{params.tile_diffusion_size}), lower scale (now {params.scale}) or send a smaller image.")


def _produced(result: Any) -> Produced:
    out = result.image
    return Produced.of_image(out, {"seed": int(result.seed), "width": out.width, "height": out.height},
                             getattr(result, "timings", None))
