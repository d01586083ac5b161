"""CCSR v1's settings section (``settings.models["ccsr-v1"]``).

Its environment variables keep the names they had before models had sections
(``CCSR_WEIGHTS``, ``CCSR_TILE_BATCH_SIZE`` ...): the prefix is plain ``CCSR_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ccsr.settings import ModelSettings


class CCSRv1Settings(ModelSettings):
    """The weights and engine knobs of CCSR v1 (fal-ai/ccsr)."""

    model_config = SettingsConfigDict(env_prefix="CCSR_")

    weights: Optional[Path] = Field(None, json_schema_extra={"cli": {}}, description="Checkpoint file (.ckpt or .safetensors); default: the Hugging Face cache copy fetched by `ccsr weights download`.")
    config: Optional[Path] = Field(None, json_schema_extra={"cli": {"exists": True, "dir_okay": False}}, description="Official-format model YAML; default: sizes inferred from the checkpoint's tensor shapes.")
    tile_batch_size: int = Field(4, ge=1, description="Diffusion tiles evaluated together in one network call.")
    auto_memory: bool = Field(True, description="Estimate each request's peak memory before it runs and, when it would not fit the device's free memory (or memory_budget), turn on tiled VAE, shrink the VAE tiles, lower tile_batch_size and park VAE tiles on the CPU until it fits (the plan is logged). Tiled diffusion is never switched on by it. Off: requests run exactly as asked.")
    memory_budget: Optional[int] = Field(None, ge=1, description="Bytes of activation memory a request may use on the device, on top of the loaded weights (for auto_memory); default: the device's free memory when the request starts.")
    compile: Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field("off", description="torch.compile the UNet and ControlNet with this mode (reduce-overhead and max-autotune add CUDA graphs). The first request of each size compiles (tens of seconds to minutes); meant for GPUs serving many requests of a few sizes.")
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="NHWC (channels_last) weights for the convolution networks; auto: on for CUDA, off elsewhere.")


def channels_last_flag(value: Optional[str]) -> Optional[bool]:
    """The ``channels_last`` setting as the engine takes it: True, False, or
    None for "auto" (the engine decides by device)."""
    return {"on": True, "off": False}.get(value or "auto")
