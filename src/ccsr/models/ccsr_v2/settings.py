"""CCSR-v2's settings section (``settings.models["ccsr-v2"]``): environment
variables ``CCSR_V2_<FIELD>``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ccsr.settings import ModelSettings


class V2Settings(ModelSettings):
    """The weights and engine knobs of CCSR-v2 (ccsr/v2)."""

    model_config = SettingsConfigDict(env_prefix="CCSR_V2_")

    weights: Optional[Path] = Field(None, json_schema_extra={"cli": {"file_okay": False}}, description="CCSR-v2 weights folder in the official layout (stable-diffusion-2-1-base/, controlnet/ or Controlnet/, vae/); default: the Hugging Face cache copy fetched by `ccsr weights download --model ccsr-v2`. Without this setting, a server that is not told its apps serves ccsr/v2 only when such a folder is found.")
    allow_pickle: bool = Field(False, description="Load pickled .bin weights when a folder has no safetensors (a pickle can run code when loaded: only for files you trust).")
    release_weights: bool = Field(True, description="On a CPU (Linux): the weights are mapped from their safetensors files, and each network hands its pages back to the kernel as it finishes with them (block by block during a forward pass, whole after it), so a request holds about one block of weights instead of all 6.6 GB: a full-size two-step 256 -> 512 request peaked at 2.6 GiB instead of 7.9 GiB, for about 5% more time (docs/ccsr-v2.md). The pages stay in the page cache and are mapped again on the next use; under memory pressure the kernel may have to read them from disk again. Weights converted to another dtype on loading (bf16 from fp32 files) are copies and stay resident; a folder written in that dtype by `ccsr weights convert` stays mapped. Off: every network stays resident.")
    tile_batch_size: int = Field(4, ge=1, description="Diffusion tiles evaluated together in one network call (tiled diffusion).")
    auto_memory: bool = Field(True, description="Estimate each request's peak memory before it runs and, when it would not fit the device's free memory (or memory_budget), turn on the tiled VAE decoder, shrink its tiles and lower tile_batch_size until it fits (the plan is logged). Tiled diffusion is never switched on by it. Off: requests run exactly as asked.")
    memory_budget: Optional[int] = Field(None, ge=1, description="Bytes of activation memory a request may use on the device, on top of the loaded weights (for auto_memory); default: the device's free memory when the request starts.")
